"""Why pg/copy_in.py catches what psycopg2 prints: a minimal reproduction on the real server.

When the server ends a connection in the middle of COPY FROM STDIN, psycopg2 2.9 does not raise the server's
error: it prints a SystemError (caused by the server's error) through sys.excepthook and raises a bare
"invalid socket". The first test shows psycopg2 doing it (if a future psycopg2 stops, it fails and the
workaround can go); the second that copy_table raises the server's own error and prints nothing.
"""

from __future__ import annotations

import sys
import threading

import psycopg2
import pytest
from psycopg2 import sql

from backup_tasks.pg import copy_in
from backup_tasks.pg.handoff import Handoff
from tests.conftest import ADMIN_URL

APP = "bt_copy_in_errors"


class _TerminatingReader:
    """Hands out COPY lines and, at the third read, has another connection terminate this session."""

    def __init__(self):
        self.reads = 0

    def read(self, size: int = -1) -> bytes:
        self.reads += 1
        if self.reads == 3:
            admin = psycopg2.connect(ADMIN_URL)
            admin.autocommit = True
            with admin.cursor() as cur:
                cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
                            (APP,))
            admin.close()
        return b"x\n" * 10_000 if self.reads < 50 else b""

    readline = read


@pytest.fixture
def copy_cursor():
    conn = psycopg2.connect(ADMIN_URL, application_name=APP)
    cur = conn.cursor()
    cur.execute("CREATE TEMP TABLE t (a text)")
    yield cur
    conn.close()


def test_psycopg2_prints_the_servers_error_instead_of_raising_it(copy_cursor, monkeypatch):
    printed = []
    monkeypatch.setattr(sys, "excepthook", lambda kind, value, tb: printed.append(value))
    with pytest.raises(psycopg2.OperationalError) as raised:
        copy_cursor.copy_expert("COPY t FROM STDIN", _TerminatingReader(), size=8192)
    assert "terminating connection" not in str(raised.value)  # what is raised has lost the cause
    causes = [p.__cause__ for p in printed]
    assert any(isinstance(c, psycopg2.errors.AdminShutdown) for c in causes), printed


def test_copy_table_raises_the_servers_error_and_prints_nothing(copy_cursor, monkeypatch, capsys):
    reader = _TerminatingReader()
    handoff = Handoff(maxsize=1)

    def produce() -> None:
        while (data := reader.read()) and handoff.put((data, None)):
            pass
        handoff.put(None)

    handoff.start(produce, "test-producer")
    other_thread_output = []
    try:
        with pytest.raises(psycopg2.errors.AdminShutdown) as raised:
            copy_in.copy_table(copy_cursor, sql.SQL("COPY t FROM STDIN"), copy_in._QueueReader(handoff, None))
        # Another thread's exceptions still reach the hook that was there before.
        previous = copy_in._printed._previous
        monkeypatch.setattr(copy_in._printed, "_previous", lambda kind, value, tb: other_thread_output.append(value))
        worker = threading.Thread(target=lambda: sys.excepthook(ValueError, ValueError("elsewhere"), None))
        worker.start()
        worker.join()
        monkeypatch.setattr(copy_in._printed, "_previous", previous)
    finally:
        handoff.close()
    assert raised.value.pgcode == "57P01"
    assert [str(e) for e in other_thread_output] == ["elsewhere"]
    assert capsys.readouterr().err == ""
