"""Help comes fast: building the CLI and rendering any command's --help imports none of
the heavy packages a command needs only when it runs (the store, the API, Redis, settings,
the HTTP client).

Checked in a fresh interpreter, by what lands in sys.modules, not by timing."""

from __future__ import annotations

import json
import subprocess
import sys

from eventstream.cli.common import DEFAULT_CONCURRENCY, DEFAULT_REPLAY_RATE
from eventstream.settings import Settings

HEAVY = (
    "sqlalchemy", "alembic", "fastapi", "starlette", "uvicorn", "redis", "httpx",
    "pydantic_settings", "pydantic",  # pydantic: see CommandGroup in eventstream.cli.common
)  # fmt: skip

# Prints, as JSON, the heavy packages loaded after each step (in one process, so each
# step's list holds what the steps before it loaded too): the import, then `eventstream
# --help` and `eventstream worker --help`, then every command's --help.
PROBE = """
import json, sys

HEAVY = {heavy!r}

def loaded():
    return sorted({{name.split(".")[0] for name in sys.modules}} & set(HEAVY))

steps = {{}}
import eventstream.cli
steps["import"] = loaded()

from typer.main import get_command
from typer.testing import CliRunner

def commands(path, command):
    yield path
    for name, sub in getattr(command, "commands", {{}}).items():
        yield from commands([*path, name], sub)

for path in [[], ["worker"], *commands([], get_command(eventstream.cli.cli))]:
    result = CliRunner().invoke(eventstream.cli.cli, [*path, "--help"])
    assert result.exit_code == 0, result.output
    steps.setdefault(" ".join(["eventstream", *path, "--help"]), loaded())
print(json.dumps(steps))
"""


def test_help_imports_nothing_heavy() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(heavy=HEAVY)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    steps: dict[str, list[str]] = json.loads(done.stdout)
    assert "eventstream worker --help" in steps
    assert "eventstream db upgrade --help" in steps
    assert {step: mods for step, mods in steps.items() if mods} == {}


def test_help_defaults_are_the_settings_defaults() -> None:
    assert Settings.model_fields["concurrency"].default == DEFAULT_CONCURRENCY
    assert Settings.model_fields["replay_rate"].default == DEFAULT_REPLAY_RATE
