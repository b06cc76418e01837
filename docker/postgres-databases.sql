-- Run by the postgres image on its first start (docker-entrypoint-initdb.d): the two databases that
-- backup_tasks.example.toml names beside POSTGRES_DB, so the stack backs up three databases out of the box.
CREATE DATABASE orders;
CREATE DATABASE billing;
