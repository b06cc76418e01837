"""Large objects (`pg_largeobject`): read in the backup's snapshot, written back with the same oids in the
restore's transaction, counted for a diff.

An application keeps an `oid` column pointing at them (lo_import, lo_from_bytea, JDBC's and psycopg2's
large-object APIs); pg_dump keeps them even with --data-only, and so do we. They travel as chunk rows
`[oid, owner, offset, data]` (data as bytea's hex text), read in pieces of bounded size whatever an object's
size: a first piece of each of several objects per query, then the rest of the big ones a MiB at a time.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from psycopg2 import sql

CHUNK_BYTES = 1 << 20  # one row of the file holds at most this much of an object (2 MiB as hex text)
MAX_OBJECTS_PER_QUERY = 1000


@dataclass(frozen=True)
class LargeObject:
    oid: int
    owner: str


def list_large_objects(cur, first: int | None = None, stop: int | None = None) -> list[LargeObject]:
    """Every large object (in the transaction's snapshot), by oid; or those with first <= oid < stop.
    pg_largeobject_metadata is readable by all."""
    cur.execute("SELECT m.oid, pg_get_userbyid(m.lomowner) FROM pg_largeobject_metadata m "
                "WHERE m.oid::bigint >= %s AND (%s::bigint IS NULL OR m.oid::bigint < %s) ORDER BY m.oid",
                (first or 0, stop, stop))
    return [LargeObject(int(oid), owner) for oid, owner in cur.fetchall()]


def count_large_objects(cur) -> int:
    cur.execute("SELECT count(*) FROM pg_largeobject_metadata")
    return int(cur.fetchone()[0])


def read_chunks(cur, objects: list[LargeObject], budget: int) -> Iterator[list[list]]:
    """Batches of chunk rows [oid, owner, offset, hex data], objects in oid order, each batch about `budget`
    bytes of data at most (a single chunk of CHUNK_BYTES aside).

    lo_get opens the object with the transaction's snapshot (INV_READ), so what is read is what the backup's
    snapshot sees. A query reads the first `piece` bytes of up to `per_query` objects, where piece x per_query
    stays within the budget; an object that filled its piece is then read on, CHUNK_BYTES a query."""
    per_query = max(1, min(MAX_OBJECTS_PER_QUERY, budget // 4096))
    piece = max(1, min(CHUNK_BYTES, budget // per_query))
    for start in range(0, len(objects), per_query):
        group = objects[start:start + per_query]
        cur.execute("SELECT lo_get(o, 0, %s) FROM unnest(%s::oid[]) WITH ORDINALITY AS x(o, n) ORDER BY n",
                    (piece, [o.oid for o in group]))
        firsts = [bytes(data) for (data,) in cur.fetchall()]
        batch, size = [], 0
        for lo, data in zip(group, firsts, strict=True):
            batch.append([lo.oid, lo.owner, 0, "\\x" + data.hex()])
            size += len(data)
            if len(data) < piece:
                continue
            if batch:  # the first pieces so far, before this object's rest
                yield batch
                batch, size = [], 0
            yield from _rest(cur, lo, len(data))
        if batch:
            yield batch


def _rest(cur, lo: LargeObject, offset: int) -> Iterator[list[list]]:
    while True:
        cur.execute("SELECT lo_get(%s, %s, %s)", (lo.oid, offset, CHUNK_BYTES))
        data = bytes(cur.fetchone()[0])
        if not data:
            return
        yield [[lo.oid, lo.owner, offset, "\\x" + data.hex()]]
        offset += len(data)
        if len(data) < CHUNK_BYTES:
            return


# --- restore ---------------------------------------------------------------------------------------------

STAGING = sql.Identifier("backup_tasks_large_objects")
STAGING_COLUMNS = ["oid", "owner", "offset", "data"]


def unlink_all(cur) -> int:
    """Remove every large object of the database (the restore replaces them, as it replaces tables' rows)."""
    cur.execute("SELECT count(lo_unlink(oid)) FROM pg_largeobject_metadata")
    return int(cur.fetchone()[0])


def create_staging(cur) -> sql.Composable:
    """A temporary table the chunk rows are COPYed into (the fast path rows take); returns the COPY statement."""
    cur.execute(sql.SQL('CREATE TEMP TABLE {} (oid oid, owner text, "offset" bigint, data bytea) '
                        "ON COMMIT DROP").format(STAGING))
    return sql.SQL("COPY {} (oid, owner, \"offset\", data) FROM STDIN WITH (FORMAT text)").format(STAGING)


@dataclass
class LargeObjectsWritten:
    objects: int
    bytes: int
    owners_kept: int  # objects given back to their recorded owner
    owners_missing: list[str]  # recorded owners that do not exist here or that this role may not give objects to


def write_from_staging(cur) -> LargeObjectsWritten:
    """Create every staged object with its own oid, write its chunks in order, give it to its recorded owner
    where that role exists and this role may (superuser, or a member of it); the others stay this role's."""
    cur.execute(sql.SQL('SELECT count(lo_from_bytea(oid, data)), coalesce(sum(length(data)), 0) FROM '
                        '(SELECT oid, data FROM {} WHERE "offset" = 0 ORDER BY oid) s').format(STAGING))
    objects, first_bytes = cur.fetchone()
    cur.execute(sql.SQL('SELECT count(lo_put(oid, "offset", data)), coalesce(sum(length(data)), 0) FROM '
                        '(SELECT oid, "offset", data FROM {} WHERE "offset" > 0 ORDER BY oid, "offset") s')
                .format(STAGING))
    _, rest_bytes = cur.fetchone()
    cur.execute(sql.SQL("""
        SELECT s.owner, array_agg(s.oid ORDER BY s.oid),
               EXISTS (SELECT 1 FROM pg_roles r WHERE r.rolname = s.owner)
                   AND pg_has_role(current_user, s.owner, 'MEMBER')
        FROM {} s WHERE s."offset" = 0 AND s.owner IS DISTINCT FROM current_user GROUP BY s.owner ORDER BY 1
    """).format(STAGING))
    kept, missing = 0, []
    for owner, oids, allowed in cur.fetchall():
        if not allowed:
            missing.append(owner)
            continue
        # ALTER LARGE OBJECT takes one oid: a thousand statements per round trip.
        for start in range(0, len(oids), 1000):
            cur.execute(sql.SQL("; ").join(
                sql.SQL("ALTER LARGE OBJECT {} OWNER TO {}").format(sql.Literal(int(o)), sql.Identifier(owner))
                for o in oids[start:start + 1000]))
        kept += len(oids)
    return LargeObjectsWritten(int(objects), int(first_bytes) + int(rest_bytes), kept, missing)
