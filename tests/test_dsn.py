"""backup_tasks.dsn against libpq itself (psycopg2's parse_dsn is PQconninfoParse): both forms, quoting, escapes."""

from __future__ import annotations

import random
from urllib.parse import quote

import pytest
from psycopg2.extensions import parse_dsn

from backup_tasks import dsn
from backup_tasks.errors import ConfigError

SECRET = "pa ss'wo\\rd@:/?&="

URLS = [
    "postgresql://u:p%40ss@h1:5433,h2/db%2Fx?sslmode=require&application_name=a+b",
    "postgres://[::1]:5432/d",
    "postgresql://",
    "postgresql:///db?host=/var/run/postgresql",
    "postgresql://user@host/db?password=s3cr%3Det",
    "postgresql://:only-password@host:1/db",
]
KEYWORDS = [
    "host=localhost dbname=nonexist user=bob password='se cr\\'et'",
    "host = /tmp port=5 dbname=x password=abc\\ def",
    "dbname=a",
    "  password=''   dbname='q uoted'  ",
    "host=h password=\\'x",
]


@pytest.mark.parametrize("text", URLS + KEYWORDS)
def test_parse_params_agrees_with_libpq(text):
    assert dsn.parse_params(text) == parse_dsn(text)


def _random_value(rng: random.Random) -> str:
    alphabet = "abcXYZ019 '\\=@:/?&%"
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 12)))


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def test_random_keyword_strings_agree_with_libpq():
    rng = random.Random(7)
    for _ in range(500):
        params = {key: _random_value(rng) for key in rng.sample(["host", "dbname", "user", "password", "port"], 3)}
        text = " ".join(f"{k}{rng.choice(['=', ' = ', '= '])}{_quote(v)}" for k, v in params.items())
        assert dsn.parse_params(text) == parse_dsn(text) == params
        masked = dsn.parse_params(dsn.mask(text))  # still a valid string: only the password was replaced
        assert masked == {k: dsn.MASK if k == "password" else v for k, v in params.items()}


@pytest.mark.parametrize("text", [
    f"postgresql://bob:{quote(SECRET, safe='')}@db:5432/app",
    f"host=db dbname=app user=bob password={_quote(SECRET)}",
    f"host=db password={_quote(SECRET)} dbname=app",
    "host=db dbname=app password=plainsecret user=bob",
    "postgresql://bob@db/app?password=plainsecret&sslmode=require",
])
def test_mask_hides_the_password_of_both_forms(text):
    params = dsn.parse_params(text)
    masked = dsn.mask(text)
    assert params["password"] not in masked and "plainsecret" not in masked
    assert dsn.MASK in masked
    target = dsn.parse(text)
    assert (target.name, target.host) == ("app", "db")
    assert params["password"] not in repr(target) and params["password"] not in target.describe()


def test_mask_never_fails_on_unparsable_text():
    for text in ["host=x password='unterminated", "password=", "://:x@", "no equals sign", ""]:
        dsn.mask(text)
    assert "unterminated" not in dsn.mask("host=x password='unterminated")


def test_refused_like_libpq():
    for text in ["host=x dbname", "host='unterminated"]:
        with pytest.raises(Exception):  # noqa: B017 - psycopg2 raises its own ProgrammingError here
            parse_dsn(text)
        with pytest.raises(ConfigError):
            dsn.parse_params(text)


def test_key_is_the_same_database_however_it_is_spelled():
    spellings = [
        "postgresql://a:b@localhost:5432/app",
        "postgresql://127.0.0.1/app",
        "host=/var/run/postgresql dbname=app user=x password=y",
        "dbname=app port=5432",
    ]
    assert len({dsn.parse(s).key for s in spellings}) == 1
    assert dsn.parse("postgresql://localhost/app").key != dsn.parse("postgresql://localhost/other").key
    assert dsn.parse("postgresql://localhost:5433/app").key != dsn.parse("postgresql://localhost/app").key


def test_endpoint_keeps_scheme_host_and_port_only():
    assert dsn.endpoint("https://tok:x@hooks.example.com:8443/path/secret?x=1") == "https://hooks.example.com:8443"
    assert dsn.mask("redis://:pw@localhost:6379/0") == "redis://:***@localhost:6379/0"
