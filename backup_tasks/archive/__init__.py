"""The backup file format: one gzip-compressed JSON document, written and read as a stream.

Layout (one JSON row per line, so the reader can parse large groups of lines at once; any JSON parser reads
the whole document):

    {"metadata":{...},"tables":{
    "users":{"schema":"public","name":"users","columns":[...],"column_types":[...],"data":[
    [1,"Alice"],
    [2,"Bob"]
    ],"row_count":2},
    "audit.log":{...,"data":[
    ],"row_count":0}
    }}
"""
