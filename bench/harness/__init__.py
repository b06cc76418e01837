"""The benchmark harness behind bench/run.py (see bench/README.md for the method).

    datasets / generators   the databases measured, built once and reused with --keep-db
    measure / quiet         one command as a process tree: wall time, peak RSS, CPU of client, worker and server
    engine / worker         the copy of backup_tasks/ every command imports; the Celery worker queued jobs run on
    reference / ours        the command lines: pg_dump/pg_restore, and backupctl as a user types it
    operations / runner     which operation runs on which dataset, in alternating order
    oracle_check            tests/oracle.py on source and target after a restore
    targets / report        the issues' targets in one table; the printed table, the JSON, the verdict
"""
