"""Every command's --help reads as written: hints in [brackets] kept, no type labels,
each option's environment variable and default shown, usage lines without stray brackets."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from eventstream.cli import cli

# Options that stand for a setting: their help names its environment variable.
SETTING_OF = {
    "--data-dir": "EVENTSTREAM_DATA_DIR",
    "--concurrency": "EVENTSTREAM_CONCURRENCY",
    "--url": "EVENTSTREAM_API_URL",
    "--api-key": "EVENTSTREAM_API_KEY",
    "--older-than": "EVENTSTREAM_RETENTION",
}
TYPE_LABEL = re.compile(r"<(?:str|int|float|bool|path|datetime|list\[|[a-z ]+ range|[a-z]+\|)")


def commands() -> Iterator[tuple[list[str], Any]]:
    def walk(path: list[str], command: Any) -> Iterator[tuple[list[str], Any]]:
        yield path, command
        if hasattr(command, "commands"):  # a group (typer's own click)
            for name, sub in command.commands.items():
                yield from walk([*path, name], sub)

    yield from walk([], get_command(cli))


def flat(text: str) -> str:
    return " ".join(text.split())


def render(path: list[str]) -> str:
    result = CliRunner().invoke(cli, [*path, "--help"], env={"COLUMNS": "100", "NO_COLOR": "1"})
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize(
    ("path", "command"),
    list(commands()),
    ids=lambda v: " ".join(v) or "eventstream" if isinstance(v, list) else "",
)
def test_help_reads_as_written(path: list[str], command: Any) -> None:
    out = render(path)
    text = flat(out)
    usage = out.split("\n", 1)[0] if out.startswith("Usage") else out.strip().split("\n", 1)[0]
    assert "[[" not in usage, usage
    assert "{" not in usage, usage
    assert not TYPE_LABEL.search(out), f"a type label in:\n{out}"
    if command.help:
        first = command.help.split("\n\n")[0]
        assert flat(first) in text, f"the description is not as written:\n{out}"
    for param in command.params:
        if param.name == "help" or getattr(param, "hidden", False):  # hidden: a deprecated spelling
            continue
        help_text = getattr(param, "help", None)
        if help_text:
            assert flat(help_text) in text, f"{param.opts}: help not as written:\n{out}"
        if param.param_type_name == "option":
            if param.envvar:
                assert f"env var: {param.envvar}" in text, f"{param.opts}: no env var in:\n{out}"
            for opt in param.opts:
                if opt in SETTING_OF:
                    assert SETTING_OF[opt] in text, f"{opt}: {SETTING_OF[opt]} not in:\n{out}"
            if param.show_default and not param.is_flag and param.default is not None:
                shown = param.show_default if isinstance(param.show_default, str) else param.default
                assert f"default: {shown}" in text or f"default: ({shown})" in text, (
                    f"{param.opts}: default not in:\n{out}"
                )
