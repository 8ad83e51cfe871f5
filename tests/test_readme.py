"""The README stays true: every setting and command it must document is there."""

from __future__ import annotations

from pathlib import Path

from typer.main import get_command

from eventstream.cli import cli
from eventstream.settings import Settings

README = (Path(__file__).parent.parent / "README.md").read_text()


def test_every_setting_is_in_the_configuration_table() -> None:
    missing = [
        f"EVENTSTREAM_{name.upper()}"
        for name in Settings.model_fields
        if f"| `EVENTSTREAM_{name.upper()}` |" not in README
    ]
    assert missing == []


def test_every_command_is_documented() -> None:
    group = get_command(cli)
    commands = [name for name in group.list_commands(None) if name != "version"]  # type: ignore[attr-defined,arg-type]
    assert commands
    assert [c for c in commands if f"`eventstream {c}" not in README] == []


def test_the_two_commands_come_first() -> None:
    head = README[: README.index("## A five-minute walkthrough")]
    assert "scripts/run" in head
    assert "scripts/test" in head
    assert Path(__file__).parent.parent.joinpath("scripts", "run").exists()
    assert Path(__file__).parent.parent.joinpath("scripts", "test").exists()
