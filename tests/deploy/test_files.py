"""The deployment files say what the README promises: checked by parsing them.

There is no Docker engine here, so the image is not built; `docker compose config`
validates compose.yaml where the compose plugin is installed.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import tomllib
from typing import Any

import pytest
import yaml

from eventstream.cli.procfile import parse_procfile
from tests.support.paths import REPO_ROOT

COMPOSE = REPO_ROOT / "compose.yaml"
DOCKERFILE = REPO_ROOT / "Dockerfile"
PROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose["services"]
    return found


def _seconds(duration: str) -> float:
    match = re.fullmatch(r"(\d+)s", duration)
    assert match, duration
    return float(match.group(1))


def test_compose_has_the_whole_topology(services: dict[str, dict[str, Any]]) -> None:
    assert set(services) == {"redis", "postgres", "migrate", "api", "worker"}
    assert services["worker"]["deploy"]["replicas"] == 3


def test_redis_keeps_every_event(services: dict[str, dict[str, Any]]) -> None:
    redis = services["redis"]
    assert redis["image"].startswith("redis:7")
    args = redis["command"]
    flags = {args[i]: args[i + 1] for i in range(1, len(args) - 1, 2)}
    assert flags["--appendonly"] == "yes"
    assert flags["--appendfsync"] in ("everysec", "always")
    assert flags["--maxmemory-policy"] == "noeviction"
    assert redis["volumes"] == ["redis-data:/data"]
    assert redis["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]


def test_postgres_is_15_with_a_volume_and_a_health_check(services: dict[str, dict[str, Any]]) -> None:
    pg = services["postgres"]
    assert pg["image"] == "postgres:15"
    assert pg["volumes"] == ["postgres-data:/var/lib/postgresql/data"]
    assert "pg_isready" in pg["healthcheck"]["test"][1]


def test_named_volumes_are_declared(compose: dict[str, Any]) -> None:
    assert set(compose["volumes"]) == {"redis-data", "postgres-data"}


def test_migrations_run_once_before_the_api_and_workers(services: dict[str, dict[str, Any]]) -> None:
    migrate = services["migrate"]
    assert migrate["command"] == ["eventstream", "db", "upgrade"]
    assert migrate["restart"] == "no"
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("api", "worker"):
        deps = services[name]["depends_on"]
        assert deps["redis"]["condition"] == "service_healthy"
        assert deps["postgres"]["condition"] == "service_healthy"
        assert deps["migrate"]["condition"] == "service_completed_successfully"


def test_api_and_workers_point_at_redis_and_postgres(services: dict[str, dict[str, Any]]) -> None:
    for name in ("migrate", "api", "worker"):
        env = services[name]["environment"]
        assert env["EVENTSTREAM_REDIS_URL"] == "redis://redis:6379/0"
        assert env["EVENTSTREAM_DATABASE_URL"].startswith("postgresql+asyncpg://")
        assert env["EVENTSTREAM_DATABASE_URL"].endswith("@postgres:5432/eventstream")


def test_api_health_check_and_loopback_only_port(services: dict[str, dict[str, Any]]) -> None:
    api = services["api"]
    assert api["command"][:4] == ["eventstream", "api", "--host", "0.0.0.0"]
    assert "/healthz" in " ".join(api["healthcheck"]["test"])
    # no API keys in this file: the port is published on the host's loopback only
    assert api["ports"] == ["127.0.0.1:8000:8000"]


def test_stop_grace_periods_cover_the_shutdown_grace(services: dict[str, dict[str, Any]]) -> None:
    grace = float(services["worker"]["environment"]["EVENTSTREAM_SHUTDOWN_GRACE"])
    # a worker may take the grace to finish handlers and as long again to record them
    assert _seconds(services["worker"]["stop_grace_period"]) >= 2 * grace
    assert _seconds(services["api"]["stop_grace_period"]) > grace


def test_docker_compose_config_accepts_the_file() -> None:
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("no docker CLI: compose.yaml was checked by parsing only")
    probe = subprocess.run([docker, "compose", "version"], capture_output=True, check=False)
    if probe.returncode != 0:
        pytest.skip("the docker compose plugin is not installed: compose.yaml was checked by parsing only")
    done = subprocess.run(
        [docker, "compose", "-f", str(COMPOSE), "config", "--quiet"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr


# ---- Dockerfile ---------------------------------------------------------------------


def _stages() -> list[list[str]]:
    """The Dockerfile's instructions (continuation lines joined), one list per stage."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    stages: list[list[str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            stages.append([])
        stages[-1].append(line)
    return stages


def test_dockerfile_is_multi_stage_on_a_slim_python() -> None:
    stages = _stages()
    assert len(stages) == 2
    for stage in stages:
        assert re.match(r"FROM python:3\.1[1-9]-slim\b", stage[0]), stage[0]
    build = " ".join(stages[0])
    assert "pip wheel" in build
    assert "[postgres]" in build


def test_final_image_runs_as_a_non_root_user_without_build_tools() -> None:
    final = _stages()[-1]
    users = [line.split()[1] for line in final if line.startswith("USER ")]
    assert users, "the final stage sets no USER"
    assert users[-1].split(":")[0] not in ("root", "0")
    text = " ".join(final)
    for tool in ("gcc", "build-essential", "apt-get install", "pip install"):
        assert tool not in text
    assert any(line.startswith("COPY --from=build /opt/venv") for line in final)
    assert "pip uninstall --yes" in text  # the base image's own pip goes too


def test_image_checks_the_api_health_and_serves_it_by_default() -> None:
    final = _stages()[-1]
    [health] = [line for line in final if line.startswith("HEALTHCHECK")]
    assert "/healthz" in health
    assert "curl" not in health
    [cmd] = [line for line in final if line.startswith("CMD ")]
    assert cmd.startswith('CMD ["eventstream", "api", "--host", "0.0.0.0"')


def _instructions(stage: list[str], name: str) -> list[str]:
    """The arguments of every ``name`` instruction of a stage, in order."""
    return [line[len(name) + 1 :].strip() for line in stage if line.upper().startswith(name + " ")]


def _variables(stage: list[str]) -> dict[str, str | None]:
    """Every ENV and ARG a stage sets: name -> value (None: an ARG without a default)."""
    found: dict[str, str | None] = {}
    for args in _instructions(stage, "ENV"):
        words = shlex.split(args)
        if "=" not in words[0]:  # the legacy form: ENV NAME value
            found[words[0]] = " ".join(words[1:])
            continue
        for word in words:
            name, _, value = word.partition("=")
            found[name] = value
    for args in _instructions(stage, "ARG"):
        name, eq, value = args.partition("=")
        found[name.strip()] = value.strip() if eq else None
    return found


_SECRET_WORDS = {"PASSWORD", "PASSWD", "PASS", "SECRET", "TOKEN", "KEY", "CREDENTIALS", "PRIVATE"}


def _looks_secret(name: str) -> bool:
    return bool(_SECRET_WORDS & set(re.split(r"[_\W]+", name.upper())))


def test_final_user_is_numeric_so_kubernetes_can_verify_it_is_not_root() -> None:
    final = _stages()[-1]
    uid, _, gid = _instructions(final, "USER")[-1].partition(":")
    assert uid.isdigit(), uid
    assert gid.isdigit(), gid
    assert int(uid) != 0
    assert int(gid) != 0
    # the user the image creates and owns /app with is that one
    run = " ".join(_instructions(final, "RUN"))
    assert f"--uid {uid}" in run
    assert f"--gid {gid}" in run


def test_image_runs_eventstream_and_exposes_the_port_it_serves() -> None:
    final = _stages()[-1]
    assert _instructions(final, "ENTRYPOINT") == []  # `docker run IMAGE eventstream worker ...` works
    [cmd] = _instructions(final, "CMD")
    argv = json.loads(cmd)
    assert argv[:2] == ["eventstream", "api"]
    port = argv[argv.index("--port") + 1]
    assert _instructions(final, "EXPOSE") == [port]
    [health] = _instructions(final, "HEALTHCHECK")
    assert f"http://127.0.0.1:{port}/healthz" in health
    # what EventStream's processes handle gracefully (the default, stated)
    assert _instructions(final, "STOPSIGNAL") == ["SIGTERM"]


def test_no_secret_is_baked_into_the_image() -> None:
    assert _looks_secret("EVENTSTREAM_REDIS_PASSWORD")
    assert _looks_secret("EVENTSTREAM_API_KEY")
    assert not _looks_secret("EVENTSTREAM_DATA_DIR")
    assert not _looks_secret("PIP_NO_CACHE_DIR")
    for stage in _stages():
        variables = _variables(stage)
        assert [name for name in variables if _looks_secret(name)] == []
        # connection settings (which carry credentials) come from the environment at run time
        assert not {"EVENTSTREAM_REDIS_URL", "EVENTSTREAM_DATABASE_URL"} & set(variables)
        assert [v for v in variables.values() if v and re.search(r"://[^/\s]*@", v)] == []
        assert _instructions(stage, "ADD") == []
        for args in _instructions(stage, "COPY"):
            if args.startswith("--from="):
                continue
            *sources, _target = shlex.split(args)
            assert set(sources) <= {"pyproject.toml", "README.md", "src"}, sources


def test_image_labels_say_what_pyproject_says() -> None:
    labels: dict[str, str] = {}
    for args in _instructions(_stages()[-1], "LABEL"):
        for word in shlex.split(args):
            name, _, value = word.partition("=")
            labels[name] = value
    assert labels["org.opencontainers.image.title"] == PROJECT["name"]
    assert labels["org.opencontainers.image.description"] == PROJECT["description"]
    assert labels["org.opencontainers.image.version"] == PROJECT["version"]
    assert labels["org.opencontainers.image.licenses"] == PROJECT["license"]


def test_dockerignore_keeps_the_context_small() -> None:
    entries = set((REPO_ROOT / ".dockerignore").read_text().split())
    assert {".venv", "data", ".git", ".pytest_cache", ".mypy_cache", "tests"} <= entries


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern as Docker reads it: ``*`` within one path segment, ``**`` across."""
    parts = re.split(r"(\*\*/?|\*|\?)", pattern.strip("/"))
    table = {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}
    return re.compile("".join(table.get(part, re.escape(part)) for part in parts))


def _ignored(path: str) -> bool:
    """Whether the build context leaves ``path`` out: the last pattern matching it or a
    folder above it decides, ``!`` letting it back in."""
    folders = ["/".join(path.split("/")[: i + 1]) for i in range(path.count("/") + 1)]
    ignored = False
    for line in (REPO_ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keep = line.startswith("!")
        regex = _glob_regex(line.removeprefix("!"))
        if any(regex.fullmatch(folder) for folder in folders):
            ignored = not keep
    return ignored


def test_dockerignore_lets_in_only_what_the_image_is_built_from() -> None:
    for stage in _stages():
        for args in _instructions(stage, "COPY"):
            if not args.startswith("--from="):
                for source in shlex.split(args)[:-1]:
                    assert (REPO_ROOT / source).exists(), source
                    assert not _ignored(source), source
    assert not _ignored("src/eventstream/__init__.py")
    assert not _ignored("src/eventstream/broker/renew.lua")
    for path in (
        ".env",
        ".env.production",
        "examples/.env",
        "data/events.db",
        "data/appendonlydir/appendonly.aof.1.incr.aof",
        ".venv/bin/python",
        ".git/config",
        "tests/conftest.py",
        "deploy/kubernetes/base/kustomization.yaml",
        "service-account-key.json",
        "src/eventstream/__pycache__/app.cpython-312.pyc",
    ):
        assert _ignored(path), path


def test_repository_procfile_has_the_api_and_a_worker() -> None:
    entries = parse_procfile((REPO_ROOT / "Procfile").read_text())
    assert entries["release"] == "eventstream db upgrade"
    assert entries["api"].startswith("eventstream api ")
    assert entries["worker"].startswith("eventstream worker")
