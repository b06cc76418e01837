"""The databases of a deployment (databases.py): the file, each database's effective settings, discovery on the
real PostgreSQL, Beat's schedule for several databases, and the notification text (masked)."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import beat_schedule
from backup_tasks import databases, dsn
from backup_tasks.errors import ConfigError, UsageError
from backup_tasks.notify import Notice
from backup_tasks.settings import Settings, get_settings, reset_settings_cache

TWO = """
[databases.orders]
url_env = "ORDERS_DATABASE_URL"
cron = "0 2 * * *"
retention_days = 14
retention_min_count = 2
s3_prefix = "orders/"

[databases.billing]
url_env = "BILLING_DATABASE_URL"
cron = "30 3 * * 1"
timezone = "Europe/Berlin"
keep_weekly = 4
compression = 3
"""


@pytest.fixture
def env(monkeypatch, tmp_path):
    """A clean settings environment in tmp_path; env(text) writes the databases file and points at it."""
    monkeypatch.chdir(tmp_path)
    for key in Settings.model_fields:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("BACKUP_DIR", str(tmp_path / "backups"))
    monkeypatch.setenv("S3_PREFIX", "backups/")

    def write(text: str | None, **variables: str) -> Settings:
        if text is not None:
            path = tmp_path / "backup_tasks.toml"
            path.write_text(text)
            monkeypatch.setenv("BACKUP_DATABASES_FILE", str(path))
        for k, v in variables.items():
            monkeypatch.setenv(k, v)
        reset_settings_cache()
        databases.clear_discovery_cache()
        return get_settings()

    yield write
    reset_settings_cache()


def test_without_the_file_the_one_database_is_the_settings_as_they_are(env, tmp_path):
    s = env(None, DATABASE_URL="postgresql://u:pw@db1:5433/app")
    db = databases.select()
    assert db.name == "default" and db.settings is s  # the very same settings: nothing moves
    assert db.settings.BACKUP_DIR == tmp_path / "backups" and db.settings.S3_PREFIX == "backups/"
    assert databases.select("default") == db
    with pytest.raises(UsageError, match="no database named 'orders' without BACKUP_DATABASES_FILE"):
        databases.select("orders")


def test_two_databases_each_with_its_own_settings_directory_and_prefix(env, tmp_path):
    env(TWO, ORDERS_DATABASE_URL="postgresql://o:secret@db1/orders_db",
        BILLING_DATABASE_URL="host=db2 dbname=billing_db password=kvsecret")
    orders, billing = databases.select("orders"), databases.select("billing")
    assert orders.settings.BACKUP_CRON == "0 2 * * *" and orders.settings.BACKUP_RETENTION_DAYS == 14
    assert orders.settings.BACKUP_RETENTION_MIN_COUNT == 2 and orders.settings.S3_PREFIX == "orders/"
    assert orders.settings.BACKUP_DIR == tmp_path / "backups" / "orders"
    assert billing.settings.BACKUP_TIMEZONE == "Europe/Berlin" and billing.settings.BACKUP_KEEP_WEEKLY == 4
    assert billing.settings.BACKUP_COMPRESSION_LEVEL == 3 and billing.settings.BACKUP_RETENTION_DAYS == 7
    assert billing.settings.S3_PREFIX == "backups/billing/" and billing.settings.BACKUP_DIR.name == "billing"
    assert dsn.parse(orders.url).name == "orders_db" and dsn.parse(billing.url).name == "billing_db"
    assert orders.describe() == "orders (database orders_db on db1:5432)"  # no password
    with pytest.raises(UsageError, match=r"several databases \(orders, billing\).*") as caught:
        databases.select()
    assert "--db NAME" in caught.value.hint


def test_backup_db_selects_and_a_missing_url_variable_fails_only_that_database(env):
    env(TWO, ORDERS_DATABASE_URL="postgresql://db1/orders_db", BACKUP_DB="billing")
    db = databases.select()
    assert db.name == "billing" and db.url_error == "BILLING_DATABASE_URL is not set"
    assert db.config.BACKUP_CRON == "30 3 * * 1"  # what Beat and listings need is there without the URL
    with pytest.raises(ConfigError, match="database billing: BILLING_DATABASE_URL is not set"):
        _ = db.settings
    assert databases.select("orders").url == "postgresql://db1/orders_db"


def test_the_url_variable_may_come_from_dot_env(env, tmp_path):
    (tmp_path / ".env").write_text("ORDERS_DATABASE_URL=postgresql://db9/from_dotenv\n")
    env(TWO)
    assert dsn.parse(databases.select("orders").url).name == "from_dotenv"


@pytest.mark.parametrize(("table", "message"), [
    ('url = "postgresql://u:pw@h/db"\nurl_env = "X"', "must never hold a URL"),
    ('cron = "0 2 * * *"', "needs url_env"),
    ('url_env = "X"\nfrobnicate = 1', "'frobnicate' is not a per-database setting"),
    ('url_env = "X"\nnotify_urls = "slack://a/b/c"', "is a secret and stays in the environment"),
    ('url_env = "X"\nnotify_webhook_url = "https://h/t"', "is a secret"),
    ('url_env = "X"\nmetrics_port = 1', "is not a per-database setting"),
    ('url_env = "X"\ncompression = 9', "compression = 9: Input should be less than or equal to 3"),
    ('url_env = "X"\nretention_min_count = 0', "retention_min_count = 0"),
    ('url_env = "X"\nexclude = ["a"]', "exclude applies to discover = true only"),
])
def test_a_bad_table_is_refused_with_a_message_naming_it(env, table, message):
    env(f"[databases.one]\n{table}\n")
    with pytest.raises(ConfigError, match=message) as caught:
        databases.deployment()
    assert "[databases.one]" in caught.value.message


@pytest.mark.parametrize(("text", "message"), [
    ("[databases.a]\nurl_env = 'A'\ns3_prefix = 'x/'\n[databases.b]\nurl_env = 'B'\ns3_prefix = 'x'\n",
     "databases a and b share the S3 prefix"),
    ("[databases.a]\nurl_env = 'A'\ndir = 'same'\n[databases.b]\nurl_env = 'B'\ndir = './same'\n",
     "databases a and b share the directory"),
    ('[databases."../up"]\nurl_env = "A"\n', "a database name is letters"),
    ("[other]\nx = 1\n", "must hold \\[databases.NAME\\] tables only"),
    ("[databases.a\n", "is not valid TOML"),
])
def test_backups_of_two_databases_can_never_mix(env, text, message):
    env(text)
    with pytest.raises(ConfigError, match=message):
        databases.deployment()


def test_every_per_database_setting_is_overridable_generically(env):
    """The mechanism is by name, not a list: a setting added later (another branch adds BACKUP_DRILL_CRON, which
    becomes `drill_cron`) is overridable at once; deployment-wide settings and secrets never are."""
    keys = databases.overridable()
    for name, info in Settings.model_fields.items():
        key = name.lower() if name.startswith("S3_") else name.removeprefix("BACKUP_").lower()
        secret = "SecretStr" in str(info.annotation)
        expected = name.startswith(("BACKUP_", "S3_")) and not secret and name not in databases.DEPLOYMENT_WIDE
        assert (key in keys) == expected, name
        if expected:
            assert databases.setting_name(key) == name
    assert databases.setting_name("drill_cron") == "BACKUP_DRILL_CRON"
    assert {"cron", "timezone", "retention_days", "retention_min_count", "keep_daily", "s3_prefix", "compression",
            "jobs", "dir"} <= set(keys)


def test_discovery_finds_every_database_the_role_may_connect_to(env, make_db, tmp_path):
    (a, a_url), (b, _), (c, _) = make_db(), make_db(), make_db()
    server = a_url.rsplit("/", 1)[0] + "/postgres"
    text = (f'[databases.fleet]\nurl_env = "SERVER_URL"\ndiscover = true\nretention_days = 3\n'
            f'exclude = ["postgres", "{b}"]\n[databases.mine]\nurl_env = "MINE_URL"\n')
    env(text, SERVER_URL=server, MINE_URL=a_url)
    found, problems = databases.all_databases()
    names = [db.name for db in found]
    assert not problems and names[0] == "mine"
    assert a not in names, "declared in the file already (same host:port/name): not a second time"
    assert b not in names and "postgres" not in names and "template1" not in names
    some = next(db for db in found if db.name == c)  # not declared, not excluded: discovered
    assert some.settings.BACKUP_RETENTION_DAYS == 3 and some.origin == "discovered through url_env SERVER_URL"
    assert some.settings.BACKUP_DIR == tmp_path / "backups" / some.name
    assert some.settings.S3_PREFIX == f"backups/{some.name}/" and dsn.parse(some.url).name == some.name
    assert databases.select(some.name).name == some.name


def test_a_server_that_cannot_be_reached_hides_no_other_database(env):
    env('[databases.srv]\nurl_env = "SRV"\ndiscover = true\n[databases.a]\nurl_env = "A"\n',
        SRV="postgresql://postgres:pw@127.0.0.1:1/postgres", A="postgresql://h/a")
    found, problems = databases.all_databases()
    assert [db.name for db in found] == ["a"] and "cannot connect" in problems["srv"]
    assert "pw" not in problems["srv"]


def test_with_database_keeps_both_forms():
    assert dsn.with_database("postgresql://u:p@h:5/x?sslmode=require&dbname=x", "y") == \
        "postgresql://u:p@h:5/y?sslmode=require"
    kv = dsn.with_database("host=h password='a b' dbname=x", "y z")
    assert dsn.parse(kv).name == "y z" and dsn.parse_params(kv)["password"] == "a b"


# --- Beat ---------------------------------------------------------------------------------------------------

def test_beat_has_one_entry_per_database_with_its_own_cron_and_time_zone(env):
    settings = env(TWO + '[databases.srv]\nurl_env = "SRV"\ndiscover = true\ncron = "15 1 * * *"\n')
    schedule = beat_schedule.build_beat_schedule(settings)
    assert sorted(schedule) == ["scheduled-backup:billing", "scheduled-backup:orders", "scheduled-backup:srv"]
    orders, billing = schedule["scheduled-backup:orders"], schedule["scheduled-backup:billing"]
    assert orders["kwargs"]["database"] == "orders" and orders["kwargs"]["cron"] == "0 2 * * *"
    assert billing["kwargs"]["timezone"] == "Europe/Berlin" and billing["kwargs"]["cron"] == "30 3 * * 1"
    assert schedule["scheduled-backup:srv"]["kwargs"]["cron"] == "15 1 * * *"
    assert all("url" not in str(e["kwargs"]).lower() for e in schedule.values()), "Beat sends names, no URL"
    zoned = billing["schedule"]
    assert zoned.zone == "Europe/Berlin" and pickle.loads(pickle.dumps(zoned)) == zoned  # Beat's shelve
    # Monday 03:30 in Berlin is 01:30 UTC in winter: due then, whatever the app's time zone.
    last = datetime(2025, 11, 3, 1, 29, tzinfo=UTC)
    assert zoned.remaining_estimate(last) <= timedelta(minutes=1, seconds=1)


def test_without_the_file_beat_keeps_its_one_entry(env):
    settings = env(None, BACKUP_CRON="17 3 * * 1")
    schedule = beat_schedule.build_beat_schedule(settings)
    assert list(schedule) == ["scheduled-backup"] and "database" not in schedule["scheduled-backup"]["kwargs"]


def test_a_bad_cron_of_one_database_stops_beat_naming_it(env):
    settings = env('[databases.a]\nurl_env = "A"\ncron = "0 25 * * *"\n')
    with pytest.raises(ConfigError, match=r"database a in .*invalid hour field '25'"):
        beat_schedule.build_beat_schedule(settings)


# --- notifications (text only; delivery is tested with a worker in test_fleet.py) -------------------------

@pytest.mark.parametrize("secret_url", ["postgresql://u:Pw0rd@h/db", "host=h user=u password=Pw0rd dbname=db"])
def test_a_notice_never_carries_a_password(secret_url):
    notice = Notice("orders", "create", False, 1.5, error=f"cannot connect to {secret_url}: refused",
                    hint=f"Check {secret_url}", target=dsn.describe(secret_url))
    text = notice.title() + notice.body()
    assert "Pw0rd" not in text and "orders" in text and "duration: 1.5 s" in text
    assert "FAILED" in notice.title() and "outcome: failure" in notice.body()


def test_file_shipped_as_example_is_valid(env, tmp_path):
    example = Path(__file__).resolve().parent.parent / "backup_tasks.example.toml"
    env(example.read_text(), **{v: "postgresql://h/x" for v in ("DATABASE_URL", "ORDERS_DATABASE_URL",
                                                               "BILLING_DATABASE_URL")})
    dep = databases.deployment()
    assert len(dep.databases) >= 3
    assert beat_schedule.build_beat_schedule(get_settings())


def test_a_connection_failure_hints_at_that_databases_own_url_variable(env):
    """The driver's hint says DATABASE_URL; for `orders` the user must look at ORDERS_DATABASE_URL."""
    from backup_tasks.errors import DatabaseError
    from backup_tasks.jobs import run_job

    env(TWO, ORDERS_DATABASE_URL="postgresql://postgres@127.0.0.1:5432/bt_no_such_database_orders",
        BILLING_DATABASE_URL="postgresql://postgres@127.0.0.1:5432/postgres")
    with pytest.raises(DatabaseError) as caught:
        run_job("create", {"database": "orders"})
    assert "ORDERS_DATABASE_URL (database orders)" in caught.value.hint, caught.value.hint
    assert "DATABASE_URL" not in caught.value.hint.replace("ORDERS_DATABASE_URL", ""), caught.value.hint
