"""Arrows between rooms point down: read from the source's own import statements
(module level and inside functions alike; only ``if TYPE_CHECKING:`` blocks are
annotations, not imports)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "eventstream"


def imported(path: Path) -> set[str]:
    """Every eventstream module a file imports, at any depth but annotations."""
    names: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            for child in ast.walk(node):
                if isinstance(child, ast.Import):
                    names.update(a.name for a in child.names)
                elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                    names.add(child.module)

    visit(ast.parse(path.read_text()).body)
    return {n for n in names if n.split(".")[0] == "eventstream"}


def under(path: Path) -> list[Path]:
    return sorted(path.rglob("*.py")) if path.is_dir() else [path]


@pytest.mark.parametrize(
    ("room", "higher"),
    [
        ("tracing.py", ("eventstream.worker", "eventstream.api", "eventstream.cli")),
        ("worker", ("eventstream.api", "eventstream.cli")),
        ("ingest.py", ("eventstream.tracing", "eventstream.api", "eventstream.worker", "eventstream.cli")),
        ("broker", ("eventstream.worker", "eventstream.api", "eventstream.cli", "eventstream.ingest")),
        ("transient.py", ("eventstream.api", "eventstream.worker", "eventstream.cli")),
    ],
)
def test_a_room_imports_nothing_above_it(room: str, higher: tuple[str, ...]) -> None:
    for path in under(SRC / room):
        wrong = sorted(m for m in imported(path) if m.startswith(higher))
        assert not wrong, f"{path.relative_to(SRC)} imports {wrong}"


def test_worker_side_tracing_lives_in_the_worker() -> None:
    assert "eventstream.tracing" in imported(SRC / "worker" / "tracing.py")
    assert not any(m.startswith("eventstream.worker") for m in imported(SRC / "tracing.py"))
