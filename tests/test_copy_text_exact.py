"""The backup's JSON lines, turned into COPY text, are byte for byte what PostgreSQL's own COPY TO writes.

The diff hashes the file's rows and the database's rows as COPY text (core/diff.py); a single byte of difference
would report an unchanged row as changed. The oracle here is the server's COPY TO, not our code.
"""

from __future__ import annotations

import io
import random

import psycopg2
from psycopg2 import sql

from backup_tasks.archive.rowjson import dump_rows, lines_to_copy_text
from backup_tasks.pg.catalog import read_catalog
from backup_tasks.pg.connection import connect
from backup_tasks.pg.snapshot import select_rows

from .conftest import db_url, run_sql


def _texts() -> list[str]:
    every_char = [chr(c) for c in range(1, 0x80)] + ["é", "€", "𝄞", "\u2028", "\ufeff"]
    rng = random.Random(11)
    alphabet = ['"', "\\", "\t", "\n", "\r", "\x0b", "\x0c", "\x08", "\x01", "\x1f", "\x7f", "a", ",", "[", "]",
                "N", "u", "0", " ", "é"]
    mixed = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12))) for _ in range(3000)]
    return every_char + mixed + ["", "\\N", "null", 'a\\"b', "\\\\u0041", '\\"', "\\u000b", "],\n["]


def test_json_lines_as_copy_text_equal_the_servers_copy_output(make_db):
    name, _ = make_db()
    url = db_url(name)
    run_sql(url, """
        CREATE TABLE t (id int PRIMARY KEY, s text, b boolean, v varchar(40), c char(3), n numeric, f float8,
                        ts timestamptz, j jsonb, a text[], by bytea, big bigint, sm smallint, i inet);
    """)
    texts = _texts()
    conn = psycopg2.connect(url)
    with conn, conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO t VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            [(i, s, [True, False, None][i % 3], s[:40], s[:3] or None,
              ["1.50", "NaN", "-0.000001", None][i % 4], [1.5, float("nan"), float("-inf"), 1e-300, None][i % 5],
              ["2024-02-29 12:00:00.123456+05:30", "infinity", "0044-03-15 00:00:00 BC", None][i % 4],
              ['{"a": "\\u0001\\"x"}', None][i % 2], [s, None, "NULL", ""][: i % 4 + 1] if i % 5 else None,
              s.encode("utf-8") if i % 2 else None, -(2 ** 63) + i, [-32768, 0, 32767][i % 3],
              ["10.1.2.3/32", "::1", "192.168.0.0/16", None][i % 4])
             for i, s in enumerate(texts)])
    conn.close()

    db = connect(url)
    try:
        cur = db.cursor()
        (table,) = read_catalog(cur).tables
        columns = [c.name for c in table.data_columns]
        server = io.BytesIO()
        # The server's own COPY text of the backup's SELECT (booleans as the JSON spells them, not t/f).
        cur.copy_expert(sql.SQL("COPY ({}) TO STDOUT").format(select_rows(table, columns, bool_as_text=True)), server)
        cur.execute(select_rows(table, columns))  # what a backup writes, row by row as psycopg2 reads them
        rows = cur.fetchall()
        ours = lines_to_copy_text(dump_rows(rows))
    finally:
        db.close()

    server_lines, our_lines = server.getvalue().split(b"\n"), ours.split(b"\n")
    assert len(our_lines) == len(texts) + 1
    mismatched = [(a, b) for a, b in zip(server_lines, our_lines) if a != b]
    assert not mismatched, mismatched[:3]
    assert server.getvalue() == ours
    # The checked shape path (a file matching its checksum) gives the same bytes.
    assert lines_to_copy_text(dump_rows(rows), width=len(columns)) == ours
