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


# The rooms of src/eventstream, lowest first. A room may import its own floor and the
# floors below it, never one above; rooms on one floor may import each other as long
# as no loop forms (checked below). The flow of an event reads across floor 2.
FLOORS: list[set[str]] = [
    {"errors", "backend_errors", "event", "settings", "logs", "heap", "tracing", "embedded"},
    {"broker", "store", "app"},
    {"backends", "ingest", "worker", "replay", "ops", "auth"},
    {"api", "cli", "__init__", "__main__"},
]


def room_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def floor_of(room: str) -> int:
    [floor] = [i for i, rooms in enumerate(FLOORS) if room in rooms]
    return floor


def rooms() -> dict[str, set[str]]:
    """Each room and the rooms it imports."""
    graph: dict[str, set[str]] = {}
    for path in sorted(SRC.rglob("*.py")):
        room = path.relative_to(SRC).parts[0].removesuffix(".py")
        targets = {room_of(m) for m in imported(path)}
        graph.setdefault(room, set()).update(targets - {room, "__init__"})
    return graph


def test_every_room_has_a_floor() -> None:
    unplaced = sorted(r for r in rooms() if not any(r in f for f in FLOORS))
    assert not unplaced, f"place {unplaced} on a floor of FLOORS"


# Arrows still to be turned round; remove each as it is fixed.
PENDING = {"auth -> api"}


def test_no_room_imports_a_room_above_it() -> None:
    wrong = [
        f"{room} -> {target}"
        for room, targets in rooms().items()
        for target in sorted(targets)
        if floor_of(target) > floor_of(room) and f"{room} -> {target}" not in PENDING
    ]
    assert not wrong, wrong


def test_rooms_form_no_loop() -> None:
    graph = rooms()
    done: set[str] = set()

    def visit(room: str, path: list[str]) -> None:
        assert room not in path, f"import loop: {' -> '.join([*path, room])}"
        if room in done:
            return
        for target in sorted(t for t in graph.get(room, ()) if f"{room} -> {t}" not in PENDING):
            visit(target, [*path, room])
        done.add(room)

    for room in sorted(graph):
        visit(room, [])


@pytest.mark.parametrize(
    ("room", "not_these"),
    [
        ("ingest", ("eventstream.worker", "eventstream.replay", "eventstream.ops")),
        ("worker", ("eventstream.ingest", "eventstream.replay")),
        ("broker", ("eventstream.store",)),
        ("store", ("eventstream.broker",)),
    ],
)
def test_rooms_on_one_floor_keep_apart(room: str, not_these: tuple[str, ...]) -> None:
    for path in under(SRC / room):
        wrong = sorted(m for m in imported(path) if m.startswith(not_these))
        assert not wrong, f"{path.relative_to(SRC)} imports {wrong}"


def test_tracing_is_split_by_side() -> None:
    assert "eventstream.tracing" in imported(SRC / "worker" / "tracing.py")
    assert "eventstream.tracing" in imported(SRC / "ingest" / "tracing.py")
    shared = imported(SRC / "tracing.py")
    assert not any(m.startswith(("eventstream.worker", "eventstream.ingest")) for m in shared)
