"""Table keys: how a table is named in a backup file (`users`, `audit.log`, `public."a.b"`).

Owned here, below both the file format (archive/) and the database side (pg/), which each need it.
"""

from __future__ import annotations

import re

_PLAIN = re.compile(r"^[a-z_][a-z0-9_]*$")


def _part(name: str) -> str:
    return name if _PLAIN.match(name) else '"' + name.replace('"', '""') + '"'


def table_key(schema: str, name: str) -> str:
    """The table's key in the file. Public tables without a dot keep their bare name (as in the seed);
    every other table is `schema.table`, each part double-quoted unless it is plain lower-case, so a key
    with an unquoted dot can never equal a bare public name and two tables never share a key."""
    if schema == "public" and "." not in name:
        return name
    return f"{_part(schema)}.{_part(name)}"


def parse_table_key(key: str) -> tuple[str, str] | None:
    """Inverse of table_key, for files that carry only the key. None if the key is not well-formed."""
    if "." not in key:
        return ("public", key)
    parts: list[str] = []
    i, n = 0, len(key)
    while i < n:
        if key[i] == '"':
            j, buf = i + 1, []
            while j < n:
                if key[j] == '"':
                    if j + 1 < n and key[j + 1] == '"':
                        buf.append('"')
                        j += 2
                        continue
                    break
                buf.append(key[j])
                j += 1
            else:
                return None
            parts.append("".join(buf))
            i = j + 1
        else:
            j = key.find(".", i)
            j = n if j < 0 else j
            parts.append(key[i:j])
            i = j
        if i < n:
            if key[i] != ".":
                return None
            i += 1
            if i == n:
                return None
    if len(parts) != 2 or table_key(parts[0], parts[1]) != key:
        return None
    return parts[0], parts[1]
