"""docker-compose.yml, Dockerfile, .dockerignore and .env.example, checked without Docker (issue 5).

Docker does not run on the machines of this project, so the stack is checked statically: the compose file
against the Compose Specification's JSON schema (tests/compose-spec.schema.json), its healthchecks,
dependency conditions, published ports and the single Beat; every command it runs against what exists
in this repository and image; every ${VAR} it reads against .env.example; .env.example against the
settings the app reads.
"""

from __future__ import annotations

import ast
import fnmatch
import importlib
import json
import os
import re
import shlex
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
SCHEMA_FILE = Path(__file__).resolve().with_name("compose-spec.schema.json")
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
ENV_EXAMPLE = ROOT / ".env.example"
PYPROJECT = ROOT / "pyproject.toml"
LOCK_FILE = ROOT / "requirements.lock"

if str(ROOT) not in sys.path:  # the package may not be installed in the venv that runs the tests
    sys.path.insert(0, str(ROOT))

# The services the stack must have, and the ones built from this repository's Dockerfile.
REQUIRED_SERVICES = {"postgres", "redis", "minio", "minio-init", "worker", "beat", "flower"}
APP_SERVICES = {"worker", "beat", "flower"}

# Programs that the upstream images are known to ship, by image name without tag. Docker is not here to
# look inside them, so this is the list to extend (deliberately) when the compose file runs something new.
# minio/minio's entrypoint prepends `minio` to a `command` that is not a program, so `server` is fine there.
IMAGE_PROGRAMS = {
    "postgres": {"postgres", "pg_isready"},
    "redis": {"redis-server", "redis-cli", "grep"},
    "minio/minio": {"server", "mc"},
    "minio/mc": {"/bin/sh", "mc"},
}
# Programs of the python:3.11-slim base image that the app services may run besides our own.
BASE_IMAGE_PROGRAMS = {"python", "sh", "grep"}

# Settings that the issue names explicitly; .env.example must document each one.
REQUIRED_ENV_DOCS = {
    "DATABASE_URL", "BACKUP_DIR", "BACKUP_CRON", "BACKUP_TIMEZONE", "BACKUP_RETENTION_DAYS",
    "BACKUP_RETENTION_MIN_COUNT", "BACKUP_KEEP_DAILY", "BACKUP_KEEP_WEEKLY", "BACKUP_KEEP_MONTHLY",
    "BACKUP_COMPRESSION_LEVEL", "BACKUP_LOCK_TIMEOUT_S", "BACKUP_NOTIFY_WEBHOOK_URL",
    "S3_BUCKET_NAME", "S3_PREFIX", "S3_ENDPOINT_URL", "S3_REGION", "S3_ADDRESSING_STYLE", "S3_SSE",
    "S3_SSE_KMS_KEY_ID", "S3_STORAGE_CLASS", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
    "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND", "CELERY_TASK_SOFT_TIME_LIMIT", "CELERY_TASK_TIME_LIMIT",
    "CELERY_RESULT_EXPIRES", "FLOWER_BASIC_AUTH", "FLOWER_ADDRESS", "FLOWER_PORT",
    "MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD",
}


# ------------------------------------------------------------------------------------------------ helpers


def load_compose() -> dict[str, Any]:
    with COMPOSE_FILE.open(encoding="utf-8") as f:
        data = yaml.safe_load(f)
    assert isinstance(data, dict), "docker-compose.yml is not a mapping"
    return data


def load_schema() -> dict[str, Any]:
    return json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))


def load_pyproject() -> dict[str, Any]:
    return tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))


def services() -> dict[str, dict[str, Any]]:
    return load_compose()["services"]


# No `docker compose` here (the client has no compose plugin, and no engine), so this is compose's interpolation
# (${VAR}, ${VAR:-x}, ${VAR-x}, ${VAR:?msg}, ${VAR:+x}, $$): what the file means with .env.example's values, and
# that the stack refuses to start without the secrets it requires, are behaviour worth checking.
class InterpolationError(ValueError):
    pass


_DOLLAR = re.compile(r"\$(?:(?P<escaped>\$)|\{(?P<braced>[^}]*)\}|(?P<named>[A-Za-z_][A-Za-z0-9_]*))")
_BRACED = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>.*))?", re.S)


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's interpolation: $$, $VAR, ${VAR}, ${VAR:-d}, ${VAR-d}, ${VAR:?err}, ${VAR?err}, ${VAR:+x}, ${VAR+x}."""

    def one(m: re.Match[str]) -> str:
        if m["escaped"]:
            return "$"
        if m["named"]:
            return env.get(m["named"], "")
        body = m["braced"]
        if "$" in body:
            raise InterpolationError(f"nested interpolation is not supported by this test: ${{{body}}}")
        b = _BRACED.fullmatch(body)
        if not b:
            raise InterpolationError(f"invalid interpolation ${{{body}}}")
        name, op, arg = b["name"], b["op"], b["arg"] or ""
        value = env.get(name)
        unset, empty = value is None, not value
        if op is None:
            return value or ""
        missing = empty if op.startswith(":") else unset
        if op.endswith("-"):
            return arg if missing else value  # type: ignore[return-value]
        if op.endswith("?"):
            if missing:
                raise InterpolationError(f"required variable {name} is missing a value: {arg}")
            return value  # type: ignore[return-value]
        return "" if missing else arg  # "+"

    return _DOLLAR.sub(one, text)


def interpolate_tree(node: Any, env: dict[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [interpolate_tree(x, env) for x in node]
    if isinstance(node, dict):
        return {k: interpolate_tree(v, env) for k, v in node.items()}
    return node


def strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, list):
        for x in node:
            yield from strings(x)
    elif isinstance(node, dict):
        for k, v in node.items():
            yield from strings(k)
            yield from strings(v)


def compose_variables(data: dict[str, Any]) -> set[str]:
    """Every variable that docker compose interpolates in the file (comments and $$ escapes excluded)."""
    names: set[str] = set()
    for s in strings(data):
        for m in _DOLLAR.finditer(s):
            if m["named"]:
                names.add(m["named"])
            elif m["braced"] is not None:
                b = _BRACED.fullmatch(m["braced"])
                assert b, f"invalid interpolation ${{{m['braced']}}} in docker-compose.yml"
                names.add(b["name"])
    return names


def parse_env_file(path: Path) -> tuple[dict[str, str], set[str]]:
    """(set values, keys shown commented out as `# KEY=...`)."""
    values: dict[str, str] = {}
    commented: set[str] = set()
    key_line = re.compile(r"(?P<hash>#\s*)?(?P<key>[A-Z][A-Z0-9_]*)=(?P<value>.*)")
    for raw in path.read_text(encoding="utf-8").splitlines():
        m = key_line.fullmatch(raw.strip())
        if not m:
            continue
        if m["hash"]:
            commented.add(m["key"])
            continue
        value = m["value"].strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        values[m["key"]] = value
    return values, commented


def env_example_values() -> dict[str, str]:
    return parse_env_file(ENV_EXAMPLE)[0]


def shell_commands(script: str) -> list[list[str]]:
    """The simple commands of a shell line: split on | || && ; &, redirections dropped."""
    lexer = shlex.shlex(script, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands: list[list[str]] = [[]]
    skip_next = False
    for tok in lexer:
        if skip_next:
            skip_next = False
            continue
        if tok in {"|", "||", "&&", ";", "&"}:
            commands.append([])
        elif tok and set(tok) <= set("<>&"):
            skip_next = True  # the redirection's target
        else:
            commands[-1].append(tok)
    result = []
    for argv in commands:
        while argv and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", argv[0]):
            argv = argv[1:]  # VAR=value prefix
        if argv:
            result.append(argv)
    return result


def argvs(spec: Any) -> list[list[str]]:
    """argv lists of a compose command/entrypoint (string = shell form) or a healthcheck test."""
    if spec is None:
        return []
    if isinstance(spec, str):
        return shell_commands(spec)
    assert isinstance(spec, list) and spec and all(isinstance(x, str) for x in spec), spec
    head = spec[0]
    if head == "NONE":
        return []
    if head == "CMD-SHELL":
        return shell_commands(" ".join(spec[1:]))
    if head == "CMD":
        return [spec[1:]]
    return [spec]


def service_argvs(svc: dict[str, Any]) -> list[tuple[str, list[str]]]:
    out = []
    for field in ("entrypoint", "command"):
        out += [(field, a) for a in argvs(svc.get(field))]
    out += [("healthcheck", a) for a in argvs((svc.get("healthcheck") or {}).get("test"))]
    return out


def resolved_services() -> dict[str, dict[str, Any]]:
    """Services with ${VAR} resolved from .env.example (as `docker compose` does with a copied .env)."""
    return interpolate_tree(load_compose(), env_example_values())["services"]


def celery_app_modules(argv: list[str]) -> list[str]:
    mods = []
    for i, tok in enumerate(argv):
        if tok in {"-A", "--app"} and i + 1 < len(argv):
            mods.append(argv[i + 1])
        elif tok.startswith("--app="):
            mods.append(tok.split("=", 1)[1])
    return mods


def celery_subcommand(argv: list[str]) -> str | None:
    i = 1
    while i < len(argv):
        tok = argv[i]
        if tok in {"-A", "--app", "-b", "--broker", "--result-backend", "--config", "--workdir"}:
            i += 2
            continue
        if tok.startswith("-"):
            i += 1
            continue
        return tok
    return None


def celery_command(argv: list[str]) -> list[str]:
    """The command line an argv amounts to: one of our process entry points (backup_tasks/processes.py, e.g.
    `backup-tasks-beat --schedule f`) becomes the `celery …` command it runs, defaults included; anything else
    is returned as it is."""
    target = load_pyproject()["project"].get("scripts", {}).get(argv[0], "")
    module, _, func = target.partition(":")
    if module != "backup_tasks.processes":
        return argv
    from backup_tasks import processes

    if func not in processes.DEFAULTS:  # backup-tasks-metrics: an entry point that is not a Celery process
        return argv
    return processes.celery_argv(func, argv[1:])


def dependency_names(pyproject: dict[str, Any]) -> set[str]:
    names = set()
    for req in pyproject["project"].get("dependencies", []):
        m = re.match(r"[A-Za-z0-9._-]+", req)
        assert m, req
        names.add(m.group(0).lower().replace("_", "-"))
    return names


def image_name(image: str) -> str:
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        name = name[: name.rfind(":")]
    return name


def published_ports(svc: dict[str, Any]) -> list[dict[str, str]]:
    """Each published port as {host_ip, published, target}; short syntax parsed like compose does."""
    out = []
    for p in svc.get("ports") or []:
        if isinstance(p, dict):
            out.append({"host_ip": str(p.get("host_ip", "")), "published": str(p.get("published", "")),
                        "target": str(p.get("target", ""))})
            continue
        spec = str(p).split("/", 1)[0]
        if spec.startswith("["):  # [ipv6]:host:container
            ip, rest = spec[1:].split("]:", 1)
            published, target = rest.split(":", 1)
        else:
            parts = spec.split(":")
            if len(parts) == 1:
                ip, published, target = "", "", parts[0]
            elif len(parts) == 2:
                ip, (published, target) = "", parts
            else:
                ip, published, target = parts[0], parts[1], ":".join(parts[2:])
        out.append({"host_ip": ip, "published": published, "target": target})
    return out


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    current = ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if current and line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        if current.strip():
            word, _, args = current.strip().partition(" ")
            out.append((word.upper(), args.strip()))
        current = ""
    return out


def copy_sources(args: str) -> tuple[list[str], bool]:
    """(sources, from_another_stage) of a COPY/ADD instruction."""
    if args.lstrip().startswith("["):
        parts = json.loads(args)
        flags: list[str] = []
    else:
        tokens = shlex.split(args)
        flags = [t for t in tokens if t.startswith("--")]
        parts = [t for t in tokens if not t.startswith("--")]
    assert len(parts) >= 2, f"COPY/ADD needs a source and a destination: {args}"
    return parts[:-1], any(f.startswith("--from") for f in flags)


def dockerignore_patterns() -> list[str]:
    if not DOCKERIGNORE.exists():
        return []
    pats = []
    for raw in DOCKERIGNORE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            pats.append(line)
    return pats


def dockerignored(rel: str, patterns: list[str]) -> bool:
    """Whether .dockerignore keeps `rel` (posix path relative to the context) out of the build context."""
    rel = rel.strip("/")
    if rel in {"", "."}:
        return False
    prefixes = ["/".join(rel.split("/")[: i + 1]) for i in range(rel.count("/") + 1)]
    excluded = False
    for raw in patterns:
        negate = raw.startswith("!")
        pat = raw.lstrip("!").strip()
        pat = pat[2:] if pat.startswith("./") else pat
        pat = pat.strip("/")
        candidates = {pat, pat[3:] if pat.startswith("**/") else pat}
        if any(fnmatch.fnmatchcase(p, c) for p in prefixes for c in candidates):
            excluded = not negate
    return excluded


# ------------------------------------------------------------------------------------------------ schema


def test_schema_file_is_the_compose_specification() -> None:
    schema = load_schema()
    assert schema.get("title") == "Compose Specification"
    assert schema.get("$id") == "compose_spec.json"
    assert str(schema.get("$schema", "")).startswith("https://json-schema.org/draft")
    validator_cls = jsonschema.validators.validator_for(schema, default=None)
    assert validator_cls is not None, f"unknown $schema {schema.get('$schema')!r}"
    validator_cls.check_schema(schema)
    assert {"services", "volumes", "networks"} <= set(schema["properties"])
    # The specification rejects unknown top-level keys and unknown service keys; the checks below rely on it.
    assert schema["additionalProperties"] is False


def test_schema_rejects_a_broken_compose_file() -> None:
    """The validator is live: a typo'd service key and a bad condition are errors."""
    schema = load_schema()
    validator = jsonschema.validators.validator_for(schema)(schema)
    bad = {"services": {"a": {"image": "x", "healtcheck": {}, "depends_on": {"b": {"condition": "started"}}},
                        "b": {"image": "y"}}}
    messages = " ".join(e.message for e in validator.iter_errors(bad))
    assert "healtcheck" in messages
    assert list(validator.iter_errors({"services": {"a": {"image": "x"}}})) == []


def test_compose_file_validates_against_the_compose_specification() -> None:
    schema = load_schema()
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = sorted(validator.iter_errors(load_compose()), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors)


def test_compose_file_validates_after_interpolation_with_env_example() -> None:
    schema = load_schema()
    validator = jsonschema.validators.validator_for(schema)(schema)
    resolved = interpolate_tree(load_compose(), env_example_values())
    errors = list(validator.iter_errors(resolved))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)


def test_compose_file_has_the_stack_services() -> None:
    assert REQUIRED_SERVICES <= set(services())
    for name in APP_SERVICES:
        svc = services()[name]
        assert "build" in svc, f"{name} must be built from this repository's Dockerfile"
        build = svc["build"]
        context = build if isinstance(build, str) else build.get("context", ".")
        assert (ROOT / context).resolve() == ROOT, f"{name} builds from {context}, not the repository root"
        dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
        assert (ROOT / context / dockerfile).is_file()


# ------------------------------------------------------------------------------------------------ health and order


@pytest.mark.parametrize("name", sorted(REQUIRED_SERVICES))
def test_every_service_has_a_healthcheck(name: str) -> None:
    svc = services()[name]
    hc = svc.get("healthcheck")
    assert isinstance(hc, dict), f"{name} has no healthcheck"
    assert not hc.get("disable"), f"{name} disables its healthcheck"
    test = hc.get("test")
    assert test, f"{name}: healthcheck without test"
    if isinstance(test, list):
        assert test[0] in {"CMD", "CMD-SHELL"}, f"{name}: healthcheck test must start with CMD or CMD-SHELL"
        assert len(test) > 1
    assert argvs(test), f"{name}: healthcheck runs nothing"


def test_all_services_in_the_file_have_a_healthcheck() -> None:
    missing = [n for n, s in services().items() if not (s.get("healthcheck") or {}).get("test")]
    assert not missing, f"services without a healthcheck: {missing}"


def test_depends_on_uses_conditions() -> None:
    svcs = services()
    for name, svc in svcs.items():
        deps = svc.get("depends_on")
        if deps is None:
            continue
        assert isinstance(deps, dict), f"{name}: depends_on must be a mapping with conditions, not a list"
        for dep, spec in deps.items():
            assert dep in svcs, f"{name} depends on unknown service {dep}"
            assert isinstance(spec, dict) and "condition" in spec, f"{name} -> {dep} has no condition"
            cond = spec["condition"]
            if cond == "service_healthy":
                assert (svcs[dep].get("healthcheck") or {}).get("test"), \
                    f"{name} waits for {dep} healthy, it has no healthcheck"
            elif cond == "service_completed_successfully":
                assert str(svcs[dep].get("restart", "no")) == "no", \
                    f"{dep} is awaited to complete, so it must not restart"
            else:
                assert cond == "service_started", cond


@pytest.mark.parametrize(
    ("name", "dep", "condition"),
    [
        ("worker", "postgres", "service_healthy"),
        ("worker", "redis", "service_healthy"),
        ("worker", "minio-init", "service_completed_successfully"),
        ("beat", "redis", "service_healthy"),
        ("flower", "redis", "service_healthy"),
        ("minio-init", "minio", "service_healthy"),
    ],
)
def test_required_dependencies(name: str, dep: str, condition: str) -> None:
    deps = services()[name].get("depends_on") or {}
    assert isinstance(deps, dict) and dep in deps, f"{name} does not depend on {dep}"
    assert deps[dep].get("condition") == condition


def test_beat_runs_exactly_one_replica() -> None:
    beat = services()["beat"]
    replicas = (beat.get("deploy") or {}).get("replicas", 1)
    assert int(replicas) == 1, f"beat has {replicas} replicas: two Beats send every scheduled job twice"
    assert int(beat.get("scale", 1)) == 1, "beat must not be scaled"
    argv = celery_command(argvs(beat["command"])[0])
    assert argv[0] == "celery" and celery_subcommand(argv) == "beat"
    # The schedule file must be somewhere the non-root user can write.
    assert "--schedule" in argv and argv[argv.index("--schedule") + 1].startswith("/tmp/")




def test_flower_requires_basic_auth() -> None:
    flower = services()["flower"]
    env = flower.get("environment")
    assert isinstance(env, dict), "flower's environment must be a mapping"
    value = str(env.get("FLOWER_BASIC_AUTH", ""))
    assert re.fullmatch(r"\$\{FLOWER_BASIC_AUTH:\?[^}]+\}", value), \
        f"FLOWER_BASIC_AUTH must use ${{VAR:?msg}}: {value!r}"
    base = env_example_values()
    assert interpolate_tree(flower, base)["environment"]["FLOWER_BASIC_AUTH"] == base["FLOWER_BASIC_AUTH"]
    for missing in ({k: v for k, v in base.items() if k != "FLOWER_BASIC_AUTH"}, {**base, "FLOWER_BASIC_AUTH": ""}):
        with pytest.raises(InterpolationError, match="FLOWER_BASIC_AUTH"):
            interpolate_tree(load_compose(), missing)


def test_flower_listens_on_all_container_interfaces_but_is_published_on_loopback_only() -> None:
    flower = resolved_services()["flower"]
    argv = celery_command(argvs(flower["command"])[0])
    assert argv[0] == "celery" and celery_subcommand(argv) == "flower"
    assert "--address=0.0.0.0" in argv and "--port=5555" in argv
    ports = published_ports(flower)
    assert ports, "flower publishes no port"
    assert any(p["target"] == "5555" for p in ports)
    for name, svc in resolved_services().items():
        for p in published_ports(svc):
            assert p["host_ip"] == "127.0.0.1", f"{name} publishes {p} beyond 127.0.0.1"


def test_published_port_parser_sees_a_public_port() -> None:
    assert published_ports({"ports": ["5555:5555"]})[0]["host_ip"] == ""
    assert published_ports({"ports": ["0.0.0.0:5555:5555"]})[0]["host_ip"] == "0.0.0.0"
    assert published_ports({"ports": [{"target": 5555, "published": 5555}]})[0]["host_ip"] == ""


# ------------------------------------------------------------------------------------------------ commands


def test_every_command_the_compose_file_runs_is_known() -> None:
    pyproject = load_pyproject()
    deps = dependency_names(pyproject)
    scripts = pyproject["project"].get("scripts", {})
    problems = []
    for name, svc in resolved_services().items():
        for field, argv in service_argvs(svc):
            prog = argv[0]
            where = f"{name}.{field}: {' '.join(argv)}"
            if "build" in svc:
                if prog.startswith("./"):
                    target = (ROOT / prog).resolve()
                    if ROOT not in target.parents:
                        problems.append(f"{where}: {prog} is outside the repository")
                elif prog == "celery":
                    if "celery" not in deps:
                        problems.append(f"{where}: celery is not a dependency in pyproject.toml")
                    sub = celery_subcommand(argv)
                    if sub not in {"worker", "beat", "flower", "inspect", "status"}:
                        problems.append(f"{where}: unexpected celery subcommand {sub!r}")
                    if sub == "flower" and "flower" not in deps:
                        problems.append(f"{where}: flower is not a dependency in pyproject.toml")
                    if not celery_app_modules(argv):
                        problems.append(f"{where}: celery without -A")
                elif prog in scripts:
                    pass
                elif prog not in BASE_IMAGE_PROGRAMS:
                    problems.append(f"{where}: {prog!r} is neither in the image nor a console script")
            else:
                known = IMAGE_PROGRAMS.get(image_name(svc.get("image", "")))
                if known is None:
                    problems.append(f"{name}: image {svc.get('image')!r} has no known programs in IMAGE_PROGRAMS")
                elif prog not in known:
                    problems.append(f"{where}: {prog!r} is not known in image {svc['image']}")
    assert not problems, "\n".join(problems)


def test_repository_scripts_that_compose_runs_exist_and_are_executable() -> None:
    """A `./script` that a service runs must exist in the repository root, be executable and start with a shebang."""
    scripts = {argv[0] for svc in resolved_services().values() if "build" in svc
               for _, argv in service_argvs(svc) if argv[0].startswith("./")}
    for prog in sorted(scripts):
        path = ROOT / prog
        assert path.is_file(), f"{prog} does not exist in the repository root"
        assert os.access(path, os.X_OK), f"{prog} is not executable (chmod +x and commit the mode)"
        assert path.read_bytes().startswith(b"#!"), f"{prog} has no shebang line"


def test_app_services_and_the_image_run_the_process_entry_points() -> None:
    """worker, beat and flower run the installed entry points (issue 20), not a checkout's script or a hand-made
    `celery` line, so the image and `make worker|beat|flower` share one set of defaults."""
    scripts = load_pyproject()["project"].get("scripts", {})
    for name in sorted(APP_SERVICES):
        argv = argvs(resolved_services()[name]["command"])[0]
        assert argv[0] == f"backup-tasks-{name}", f"{name} runs {argv[0]!r}, not backup-tasks-{name}"
        assert scripts.get(argv[0]) == f"backup_tasks.processes:{name}", f"{argv[0]} is not declared in pyproject.toml"
        assert celery_subcommand(celery_command(argv)) == name
    cmds = [a for i, a in dockerfile_instructions() if i == "CMD"]
    assert cmds and json.loads(cmds[-1]) == ["backup-tasks-worker"], f"the image's CMD is {cmds[-1:]}"


def test_worker_script_of_a_checkout_runs_the_worker_entry_point() -> None:
    """./worker stays for checkouts (and the Celery test harness): executable, and nothing but the entry point."""
    path = ROOT / "worker"
    assert path.is_file() and os.access(path, os.X_OK) and path.read_bytes().startswith(b"#!")
    execs = re.findall(r"^\s*exec\s+(\S+)(.*)$", path.read_text(encoding="utf-8"), re.M)
    assert execs, "./worker must exec the worker entry point"
    for prog, rest in execs:
        assert prog.rsplit("/", 1)[-1] == "backup-tasks-worker", f"./worker runs {prog}"
        assert rest.strip() == '"$@"', f"./worker must pass its arguments through unchanged, not {rest.strip()!r}"


def test_celery_app_module_exists_and_holds_a_celery_app() -> None:
    modules = {m for svc in resolved_services().values() if "build" in svc
               for _, argv in service_argvs(svc) if celery_command(argv)[0] == "celery"
               for m in celery_app_modules(celery_command(argv))}
    assert modules == {"backup_tasks.celery_app"}, modules
    module = "backup_tasks.celery_app"
    rel = Path(*module.split("."))
    if not ((ROOT / rel).with_suffix(".py").is_file() or (ROOT / rel / "__init__.py").is_file()):
        pytest.skip(f"{rel}.py does not exist yet (issue 4 creates it); `celery -A {module}` cannot be checked")
    from celery import Celery

    mod = importlib.import_module(module)
    found = [getattr(mod, a) for a in ("app", "celery") if isinstance(getattr(mod, a, None), Celery)]
    found += [v for v in vars(mod).values() if isinstance(v, Celery)]
    assert found, f"{module} defines no Celery app, so `celery -A {module}` would fail"


@pytest.mark.parametrize("script", ["backupctl", "backup-tasks-worker", "backup-tasks-beat", "backup-tasks-flower",
                                    "backup-tasks-metrics"])
def test_console_scripts_exist(script: str) -> None:
    scripts = load_pyproject()["project"].get("scripts", {})
    assert script in scripts, f"pyproject.toml [project.scripts] must declare {script}"
    target = scripts[script]
    module, _, func = target.partition(":")
    assert module and func, f"{script} = {target!r} is not module:function"
    rel = Path(*module.split("."))
    path = (ROOT / rel).with_suffix(".py")
    if not path.is_file():
        path = ROOT / rel / "__init__.py"
    assert path.is_file(), f"{module} ({script}'s module) does not exist"
    tree = ast.parse(path.read_text(encoding="utf-8"))
    defined = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    defined |= {t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)}
    assert func in defined, f"{module} does not define {func}()"


def test_worker_healthcheck_pings_the_workers_own_node_name() -> None:
    hc = argvs(resolved_services()["worker"]["healthcheck"]["test"])[0]
    assert hc[0] == "celery" and celery_subcommand(hc) == "inspect" and "ping" in hc
    dest = next((hc[i + 1] for i, t in enumerate(hc) if t in {"-d", "--destination"}), None)
    assert dest == "celery@$HOSTNAME", f"the worker healthcheck must ping its own node, not {dest!r}"
    # The node name the worker service really gets: its entry point's defaults, then its own arguments
    # (the last -n wins, as Click keeps the last value).
    argv = celery_command(argvs(resolved_services()["worker"]["command"])[0])
    names = [argv[i + 1] for i, t in enumerate(argv[:-1]) if t in {"-n", "--hostname"}]
    names += [t.split("=", 1)[1] for t in argv if t.startswith(("-n=", "--hostname="))]
    assert names, f"the worker service runs {argv} without a node name"
    assert names[-1] in {"celery@%h", "celery@$HOSTNAME", "celery@${HOSTNAME}"}, (
        f"the worker names its node {names[-1]!r}; the compose healthcheck pings celery@$HOSTNAME"
    )


def test_bind_mounted_files_exist() -> None:
    for name, svc in services().items():
        for vol in svc.get("volumes") or []:
            source = vol.get("source", "") if isinstance(vol, dict) else str(vol).split(":", 1)[0]
            if source.startswith((".", "/")):
                assert (ROOT / source).exists(), f"{name} mounts {source}, which does not exist"


def test_minio_init_creates_the_bucket_from_s3_bucket_name() -> None:
    init = services()["minio-init"]
    entry = argvs(init["entrypoint"])[0]
    assert entry[0] == "/bin/sh"
    mounts = {str(v).split(":")[1]: str(v).split(":")[0] for v in init.get("volumes") or []}
    assert entry[1] in mounts, f"minio-init runs {entry[1]}, which it does not mount"
    script = (ROOT / mounts[entry[1]]).read_text(encoding="utf-8")
    assert re.search(r"mc mb --ignore-existing \"local/\$bucket\"", script)
    assert "S3_BUCKET_NAME" in script
    worker_env = services()["worker"]["environment"]
    assert init["environment"]["S3_BUCKET_NAME"] == worker_env["S3_BUCKET_NAME"], \
        "worker and minio-init must agree on the bucket"
    assert str(init.get("restart")) == "no"


def test_worker_environment_points_at_the_compose_services() -> None:
    svcs = resolved_services()
    env = svcs["worker"]["environment"]
    db = urlsplit(env["DATABASE_URL"])
    assert db.scheme.startswith("postgres") and db.hostname == "postgres" and (db.port or 5432) == 5432
    pg = svcs["postgres"]["environment"]
    assert db.username == pg["POSTGRES_USER"] and db.password == pg["POSTGRES_PASSWORD"]
    assert db.path.lstrip("/") == pg["POSTGRES_DB"]
    assert env["S3_ENDPOINT_URL"] == "http://minio:9000"
    assert env["S3_ADDRESSING_STYLE"] == "path"
    assert env["S3_BUCKET_NAME"], "the stack must enable S3 (its MinIO)"
    minio = svcs["minio"]["environment"]
    assert env["AWS_ACCESS_KEY_ID"] == minio["MINIO_ROOT_USER"]
    assert env["AWS_SECRET_ACCESS_KEY"] == minio["MINIO_ROOT_PASSWORD"]
    raw = services()["worker"]["environment"]
    assert "MINIO_ROOT_USER" in raw["AWS_ACCESS_KEY_ID"] and "MINIO_ROOT_PASSWORD" in raw["AWS_SECRET_ACCESS_KEY"]
    for name in APP_SERVICES:
        e = svcs[name]["environment"]
        for key in ("CELERY_BROKER_URL", "CELERY_RESULT_BACKEND"):
            assert urlsplit(e[key]).hostname == "redis", f"{name}: {key} must point at the redis service"
        assert svcs[name].get("env_file") in (".env", [".env"]) or any(
            isinstance(f, dict) and f.get("path") == ".env" for f in svcs[name].get("env_file") or []
        ), f"{name} must read .env"


def test_volumes_for_postgres_minio_and_backups() -> None:
    data = load_compose()
    declared = set(data.get("volumes") or {})
    mounts: dict[str, dict[str, str]] = {}
    for name, svc in data["services"].items():
        for vol in svc.get("volumes") or []:
            source, target = str(vol).split(":")[:2]
            if not source.startswith((".", "/")):
                assert source in declared, f"{name} mounts volume {source}, which is not declared"
            mounts.setdefault(name, {})[target] = source
    assert mounts["postgres"].get("/var/lib/postgresql/data") in declared
    assert mounts["minio"].get("/data") in declared
    backup_dir = data["services"]["worker"]["environment"]["BACKUP_DIR"]
    assert mounts["worker"].get(backup_dir) in declared, "the worker's BACKUP_DIR must be a volume"


# ------------------------------------------------------------------------------------------------ Dockerfile


def test_dockerfile_base_user_and_install() -> None:
    instr = dockerfile_instructions()
    froms = [a for i, a in instr if i == "FROM"]
    assert froms and froms[-1].split()[0] == "python:3.11-slim"
    users = [a for i, a in instr if i == "USER"]
    assert users, "the image must not run as root"
    assert users[-1].split(":")[0] not in {"root", "0"}, f"final USER is {users[-1]}"
    assert any(i == "COPY" and copy_sources(a)[0] == ["."] for i, a in instr), "the image must COPY the repository"
    # The image runs the wheel (issue 20): a stage builds it from the repository, the final stage installs it
    # with the lock as constraints, so the image gets the versions CI tested and nothing of the checkout.
    runs = " ".join(a for i, a in instr if i == "RUN")
    assert re.search(r"pip wheel (--?[\w-]+(?:[ =][^\s-]\S*)? )*\.(\s|$)", runs), "the image must build the wheel"
    final = instr[max(n for n, (i, _) in enumerate(instr) if i == "FROM"):]
    lock_dest = [copy_dest for i, a in final if i == "COPY" and not copy_sources(a)[1]
                 and copy_sources(a)[0] == [LOCK_FILE.name] for copy_dest in [shlex.split(a)[-1]]]
    assert lock_dest, f"the final stage must COPY {LOCK_FILE.name}"
    final_runs = " ".join(a for i, a in final if i == "RUN")
    m = re.search(r"pip install (?:--constraint[ =]|-c ?)(\S+) (?:--?[\w-]+ )*(\S+\.whl)", final_runs)
    assert m, "the final stage must `pip install --constraint <lock> <wheel>`"
    assert m.group(1) == lock_dest[0], f"pip's constraint {m.group(1)} is not the copied lock {lock_dest[0]}"


def test_dockerfile_copy_sources_exist_and_are_not_dockerignored() -> None:
    patterns = dockerignore_patterns()
    sources = []
    for instr, args in dockerfile_instructions():
        if instr in {"COPY", "ADD"}:
            srcs, other_stage = copy_sources(args)
            if not other_stage:
                sources += srcs
    assert sources, "the Dockerfile copies nothing"
    for src in sources:
        assert not re.match(r"[a-z]+://", src), f"{src}: remote sources are not allowed"
        assert (ROOT / src).exists(), f"COPY source {src} does not exist"
        assert not dockerignored(src, patterns), f"COPY source {src} is excluded by .dockerignore"


def test_pip_install_inputs_are_in_the_build_context() -> None:
    """What the image's wheel build and install need from the context: pyproject, its readme, the package, the
    top-level modules (beat_schedule.py) and the lock."""
    pyproject = load_pyproject()
    project = pyproject["project"]
    modules = pyproject.get("tool", {}).get("setuptools", {}).get("py-modules", [])
    assert "beat_schedule" in modules, "pyproject.toml must install beat_schedule.py (tool.setuptools.py-modules)"
    needed = ["pyproject.toml", "backup_tasks/__init__.py", LOCK_FILE.name, *(f"{m}.py" for m in modules)]
    readme = project.get("readme")
    if isinstance(readme, str):
        needed.append(readme)
    elif isinstance(readme, dict) and "file" in readme:
        needed.append(readme["file"])
    patterns = dockerignore_patterns()
    missing = [rel for rel in needed if not (ROOT / rel).is_file()]
    assert not missing, f"missing from the repository, so the image build fails: {missing}"
    ignored = [rel for rel in needed if dockerignored(rel, patterns)]
    assert not ignored, f"excluded by .dockerignore, so the image build fails: {ignored}"


def test_dockerignore_keeps_secrets_and_local_state_out() -> None:
    patterns = dockerignore_patterns()
    for rel in (".env", ".git/config", ".venv/bin/python", "backups/x.json.gz", "backup_tasks/__pycache__/a.pyc"):
        assert dockerignored(rel, patterns), f"{rel} would be sent into the image"
    assert not dockerignored("backup_tasks/settings.py", patterns)
    assert not dockerignored(".env.example", patterns)


def test_dockerignore_matcher() -> None:
    assert dockerignored("a/b.pyc", ["**/*.pyc"]) and dockerignored("b.pyc", ["**/*.pyc"])
    assert dockerignored("x/y/z", ["x"]) and not dockerignored("x2", ["x"])
    assert not dockerignored("README.md", ["*.md", "!README.md"])


# ------------------------------------------------------------------------------------------------ .env.example


def test_env_example_documents_every_compose_variable() -> None:
    values, commented = parse_env_file(ENV_EXAMPLE)
    used = compose_variables(load_compose())
    assert "FLOWER_BASIC_AUTH" in used and "MINIO_ROOT_PASSWORD" in used  # the scan works
    missing = sorted(used - set(values) - commented)
    assert not missing, f"docker-compose.yml reads variables .env.example does not document: {missing}"


def test_compose_variable_scan_ignores_escapes() -> None:
    assert compose_variables({"a": "$${NOT_ME} $$ALSO_NOT ${YES:-1} $YES2"}) == {"YES", "YES2"}


def test_env_example_documents_every_setting() -> None:
    from backup_tasks.settings import Settings

    values, commented = parse_env_file(ENV_EXAMPLE)
    documented = set(values) | commented
    missing = sorted((set(Settings.model_fields) | REQUIRED_ENV_DOCS) - documented)
    assert not missing, f".env.example does not document: {missing}"




def test_env_example_values_are_valid_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from backup_tasks.settings import Settings, load_settings

    for key in Settings.model_fields:
        monkeypatch.delenv(key, raising=False)
    s = load_settings(ENV_EXAMPLE)
    values = env_example_values()
    for key, value in values.items():
        if key in Settings.model_fields:
            got = getattr(s, key)
            if hasattr(got, "get_secret_value"):
                assert got.get_secret_value() == value, key
            else:
                assert got == type(got)(value), (key, got, value)
    assert not s.s3_enabled, "S3 must stay off for host runs of a copied .env (the stack sets its own bucket)"


def test_env_example_secrets_are_placeholders() -> None:
    values = env_example_values()
    for key in ("POSTGRES_PASSWORD", "MINIO_ROOT_PASSWORD", "FLOWER_BASIC_AUTH"):
        assert "change-me" in values[key], f"{key} must be an obvious placeholder"
    assert re.fullmatch(r"[^:,\s]+:[^,\s]+", values["FLOWER_BASIC_AUTH"]), "FLOWER_BASIC_AUTH is user:password"
    assert len(values["MINIO_ROOT_PASSWORD"]) >= 8, "MinIO refuses root passwords under 8 characters"
    assert len(values["MINIO_ROOT_USER"]) >= 3, "MinIO refuses root users under 3 characters"
    for key, value in values.items():
        if "PASSWORD" in key or "SECRET" in key:
            assert "change-me" in value, f"{key} must be a placeholder"
    for key in ("DATABASE_URL", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND"):
        host = urlsplit(values[key]).hostname
        assert host in {"localhost", "127.0.0.1"}, f"{key} in .env.example points at {host}, not this host"
    assert values["FLOWER_ADDRESS"] == "127.0.0.1"




def test_interpolation_helper() -> None:
    env = {"A": "1", "E": ""}
    assert interpolate("${A:-2}/${E:-3}/${E-4}/${U-5}/$$A/$A", env) == "1/3//5/$A/1"
    assert interpolate("${A:+x}${E:+y}${E+z}", env) == "xz"
    with pytest.raises(InterpolationError):
        interpolate("${E:?need E}", env)
    assert interpolate("${E?need E}", env) == ""


# ------------------------------------------------------------------------------------------------ several databases


def _databases_file_mount(svc: dict[str, Any]) -> str | None:
    for vol in svc.get("volumes") or []:
        source, target = str(vol).split(":")[:2]
        if target == svc["environment"].get("BACKUP_DATABASES_FILE"):
            return source
    return None


def test_the_stack_backs_up_three_databases_each_on_its_own_schedule(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 17's 'done when': the stack's databases file names three databases with three crons, every process
    that needs it has it mounted, the worker has every URL the file names, Beat none (it sends names only)."""
    import beat_schedule
    from backup_tasks import databases
    from backup_tasks.settings import Settings, load_settings

    svcs = resolved_services()
    sources = {name: _databases_file_mount(svcs[name]) for name in ("worker", "beat", "metrics")}
    assert len(set(sources.values())) == 1 and None not in sources.values(), sources
    path = ROOT / next(iter(sources.values()))
    text = path.read_text(encoding="utf-8")
    tables = tomllib.loads(text)["databases"]
    worker_env = svcs["worker"]["environment"]
    for name, table in tables.items():
        assert table["url_env"] in worker_env, f"the worker lacks {table['url_env']} ({name})"
        assert table["url_env"] not in svcs["beat"]["environment"], "Beat needs no database URL"
    for key in Settings.model_fields:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("BACKUP_DATABASES_FILE", str(path))
    settings = load_settings()
    schedule = beat_schedule.build_beat_schedule(settings)
    assert len(schedule) == 3 and len({e["kwargs"]["cron"] for e in schedule.values()}) == 3
    assert set(databases.deployment(settings).databases) == set(tables)


def test_postgres_creates_the_databases_the_file_names() -> None:
    svcs = resolved_services()
    init = next(str(v).split(":")[0] for v in svcs["postgres"]["volumes"] if "initdb.d" in str(v))
    created = set(re.findall(r"CREATE DATABASE (\w+)", (ROOT / init).read_text(encoding="utf-8")))
    names = {urlsplit(v).path.lstrip("/") for k, v in svcs["worker"]["environment"].items()
             if k.endswith("DATABASE_URL")}
    assert names == created | {svcs["postgres"]["environment"]["POSTGRES_DB"]}, (names, created)


def test_metrics_service_runs_its_entry_point_published_on_loopback_only() -> None:
    svc = resolved_services()["metrics"]
    argv = argvs(svc["command"])[0]
    assert argv[0] == "backup-tasks-metrics"
    assert load_pyproject()["project"]["scripts"][argv[0]] == "backup_tasks.processes:metrics"
    ports = published_ports(svc)
    assert ports and all(p["host_ip"] == "127.0.0.1" for p in ports), ports
    assert "--address" in argv and argv[argv.index("--address") + 1] == "0.0.0.0", "inside its container only"
    assert all(str(v).endswith(":ro") for v in svc["volumes"]), "the metrics process only reads"
    assert (svc.get("healthcheck") or {}).get("test")
    for key in ("S3_BUCKET_NAME", "S3_ENDPOINT_URL", "BACKUP_DIR", "CELERY_BROKER_URL"):
        assert svc["environment"][key] == resolved_services()["worker"]["environment"][key], key
