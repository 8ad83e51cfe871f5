"""The docs stay true: every setting, command and default they must document is there,
the README keeps its two commands and its handler example, and the site builds with
``mkdocs build --strict``. (Endpoints, metrics and the curls of Getting started are
checked against a real server in tests/e2e/test_getting_started.py.)"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

from pydantic_core import PydanticUndefined
from typer.core import TyperGroup
from typer.main import get_command

from eventstream import EventStream
from eventstream.cli import cli
from eventstream.settings import Settings
from tests.support.servers import missing

ROOT = Path(__file__).parent.parent
DOCS = ROOT / "docs"
README = (ROOT / "README.md").read_text()
CONFIGURATION = (DOCS / "reference" / "configuration.md").read_text()
COMMANDS = (DOCS / "reference" / "commands.md").read_text()
GETTING_STARTED = (DOCS / "getting-started.md").read_text()
HANDLERS = (DOCS / "guides" / "handlers.md").read_text()


def settings_table() -> dict[str, str]:
    """The configuration page's table: variable -> default cell, as written."""
    rows = re.findall(r"^\| `(EVENTSTREAM_[A-Z0-9_]+)` \| ([^|]+) \|", CONFIGURATION, re.MULTILINE)
    return {name: default.strip() for name, default in rows}


def written_default(value: object) -> str:
    """A default as the table writes it."""
    if value is None:
        return "unset"
    if value == "":
        return "empty"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, float) and value.is_integer():
        return f"`{int(value)}`"
    return f"`{value}`"


def test_every_setting_is_in_the_configuration_table() -> None:
    prefix = Settings.model_config.get("env_prefix", "")
    table = settings_table()
    missing = [
        f"{prefix}{name.upper()}" for name in Settings.model_fields if f"{prefix}{name.upper()}" not in table
    ]
    assert missing == []
    # the same check as a substring, as it always was
    assert [n for n in Settings.model_fields if f"| `{prefix}{n.upper()}` |" not in CONFIGURATION] == []


def test_the_configuration_table_gives_each_setting_its_default() -> None:
    prefix = Settings.model_config.get("env_prefix", "")
    table = settings_table()
    wrong = {}
    for name, field in Settings.model_fields.items():
        assert field.default is not PydanticUndefined, f"{name} has no default"
        cell = table[f"{prefix}{name.upper()}"]
        if not cell.startswith(written_default(field.default)):
            wrong[f"{prefix}{name.upper()}"] = (cell, written_default(field.default))
    assert wrong == {}


def test_every_variable_in_the_table_is_read_by_the_code() -> None:
    """A row that is not a setting (the embedded server's binary) must still be read somewhere."""
    fields = {f"EVENTSTREAM_{n.upper()}" for n in Settings.model_fields}
    source = "\n".join(p.read_text() for p in (ROOT / "src" / "eventstream").rglob("*.py"))
    assert [v for v in settings_table() if v not in fields and f'"{v}"' not in source] == []


def test_every_command_is_documented() -> None:
    group = get_command(cli)
    assert isinstance(group, TyperGroup)
    commands = [name for name in group.list_commands(None) if name != "version"]  # type: ignore[arg-type]
    assert commands
    assert [c for c in commands if f"`eventstream {c}" not in COMMANDS] == []
    subcommands = []
    for name in commands:
        command = group.get_command(None, name)  # type: ignore[arg-type]
        if isinstance(command, TyperGroup):
            subcommands += [f"{name} {sub}" for sub in command.list_commands(None)]  # type: ignore[arg-type]
    assert subcommands
    assert [s for s in subcommands if s not in COMMANDS] == []


def test_the_two_commands_come_first() -> None:
    for text, next_heading in [(README, "## A handler"), (GETTING_STARTED, "## A five-minute walkthrough")]:
        head = text[: text.index(next_heading)]
        assert "scripts/run" in head
        assert "scripts/test" in head
    assert ROOT.joinpath("scripts", "run").exists()
    assert ROOT.joinpath("scripts", "test").exists()


def test_the_readme_handler_example_is_the_guides_and_it_runs() -> None:
    [example] = re.findall(r"```python\n(.*?)```", README, re.DOTALL)
    assert len(example.splitlines()) <= 20
    assert example in HANDLERS, "the README's example is the one Writing handlers explains"
    namespace: dict[str, object] = {}
    exec(compile(example, "README.md", "exec"), namespace)
    app = namespace["app"]
    assert isinstance(app, EventStream)
    assert app.types == ["*", "PAYMENT", "REPORT"]


def test_the_readme_links_resolve() -> None:
    targets = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", README)
    local = [t for t in targets if "://" not in t]
    assert local
    assert [t for t in local if not (ROOT / t).exists()] == []


def test_every_docs_page_is_markdown_in_the_nav() -> None:
    nav = (ROOT / "mkdocs.yml").read_text()
    pages = sorted(p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md"))
    assert pages
    assert [p for p in pages if f": {p}" not in nav] == []


def test_mkdocs_build_strict(tmp_path: Path) -> None:
    if importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("material") is None:
        missing("mkdocs and mkdocs-material are not installed: pip install -e '.[dev]'")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    site = tmp_path / "site"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "--config-file",
            str(ROOT / "mkdocs.yml"),
            "-d",
            str(site),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "WARNING" not in output, output
    assert (site / "index.html").exists()
    assert (site / "reference" / "configuration" / "index.html").exists()
    # offline: nothing in the built pages is fetched from another host
    html = "\n".join(p.read_text() for p in site.rglob("*.html"))
    assert (
        re.findall(r"""(?:src|href)="https?://(?!www\.rfc-editor\.org)[^"]+\.(?:js|css|woff2?)""", html) == []
    )
