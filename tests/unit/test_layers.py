"""Arrows between rooms point down: read from the source's own import statements
(module level and inside functions alike; only ``if TYPE_CHECKING:`` blocks are
annotations, not imports). Two rules read the same statements, annotations included:
auth/ and ingest/ know no HTTP framework, and no module imports what another package
keeps private (``starlette._utils``)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "eventstream"


def statements(path: Path, *, annotations: bool = False) -> list[tuple[str, list[str]]]:
    """Each absolute import of a file, at any depth, as (module, names): ``import a.b`` is
    ("a.b", []), ``from a import b, c`` is ("a", ["b", "c"]). Imports under ``if
    TYPE_CHECKING:`` only with ``annotations``."""
    found: list[tuple[str, list[str]]] = []

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if not annotations and isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            for child in ast.walk(node):
                if isinstance(child, ast.Import):
                    found.extend((a.name, []) for a in child.names)
                elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                    found.append((child.module, [a.name for a in child.names]))

    visit(ast.parse(path.read_text()).body)
    return found


def imported(path: Path) -> set[str]:
    """Every eventstream module a file imports, at any depth but annotations."""
    return {m for m, _ in statements(path) if m.split(".")[0] == "eventstream"}


def under(path: Path) -> list[Path]:
    return sorted(path.rglob("*.py")) if path.is_dir() else [path]


# The rooms of src/eventstream, lowest first. A room may import its own floor and the
# floors below it, never one above; rooms on one floor may import each other as long
# as no loop forms (checked below). The flow of an event reads across floor 2.
FLOORS: list[set[str]] = [
    {
        "errors",
        "backend_errors",
        "incoming",
        "event",
        "results",
        "version",
        "settings",
        "logs",
        "heap",
        "tracing",
        "embedded",
        "tasks",
    },
    {"broker", "store"},
    {"backends", "ingest", "worker", "replay", "ops", "auth", "client", "app"},  # app: publish -> ingest
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


def test_no_room_imports_a_room_above_it() -> None:
    wrong = [
        f"{room} -> {target}"
        for room, targets in rooms().items()
        for target in sorted(targets)
        if floor_of(target) > floor_of(room)
    ]
    assert not wrong, wrong


def test_rooms_form_no_loop() -> None:
    graph = rooms()
    done: set[str] = set()

    def visit(room: str, path: list[str]) -> None:
        assert room not in path, f"import loop: {' -> '.join([*path, room])}"
        if room in done:
            return
        for target in sorted(graph.get(room, ())):
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


HTTP_FRAMEWORKS = ("starlette", "fastapi", "uvicorn")
HTTP_ROOMS = ("api", "cli")  # the server, and the operator commands that start it


def test_only_the_api_knows_an_http_framework() -> None:
    """Requests and answers are the API's: every other room works on plain values."""
    for path in sorted(SRC.rglob("*.py")):
        if path.relative_to(SRC).parts[0] in HTTP_ROOMS:
            continue
        imports = statements(path, annotations=True)
        wrong = sorted(m for m, _ in imports if m.split(".")[0] in HTTP_FRAMEWORKS)
        assert not wrong, f"{path.relative_to(SRC)} imports {wrong}"


def foreign_private(package: str, dotted: str) -> bool:
    """Whether code in ``package`` importing ``dotted`` (a module, or a name in one)
    reaches into what another package keeps private: ``a._b`` and all under it belong
    to package ``a``, and may change in any release of it."""
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        if part.startswith("_") and not part.endswith("__"):
            owner = ".".join(parts[:i])
            return not (package == owner or package.startswith(owner + "."))
    return False


@pytest.mark.parametrize(
    ("package", "dotted", "foreign"),
    [
        ("eventstream.api", "starlette._utils", True),
        ("eventstream.api", "starlette._utils.get_route_path", True),
        ("eventstream.api", "starlette.routing._private_name", True),
        ("eventstream.cli", "eventstream.api._helper", True),
        ("eventstream", "_thread", True),
        ("eventstream.api", "eventstream.api._helper", False),
        ("eventstream.api.sub", "eventstream.api._helper", False),
        ("eventstream.api", "starlette.requests.Request", False),
        ("eventstream.api", "__future__.annotations", False),
        ("eventstream.api", "eventstream.__version__", False),
    ],
)
def test_what_counts_as_another_package_s_private_module(package: str, dotted: str, foreign: bool) -> None:
    assert foreign_private(package, dotted) is foreign


def test_no_module_imports_a_private_module_of_another_package() -> None:
    wrong = []
    for path in sorted(SRC.rglob("*.py")):
        package = ".".join(("eventstream", *path.relative_to(SRC).parent.parts))
        for module, names in statements(path, annotations=True):
            for dotted in [module, *(f"{module}.{n}" for n in names)]:
                if foreign_private(package, dotted):
                    wrong.append(f"{path.relative_to(SRC)}: {dotted}")
    assert not wrong, wrong


# broker/ is the one door to Redis: no other module holds a client, a pipeline or the
# script registry (the broker's private _redis and _scripts). Importing redis outside
# broker/ is allowed only here, each with its reason; annotations do not count.
REDIS_IMPORTERS = {
    "backend_errors.py": "the one table that turns redis-py's errors into EventStream's",
}
REDIS_USE = r"\.redis\b|\._redis\b|\bpipeline\(|\bscripts\.[a-z_]+\(|\._scripts\b"


def redis_imports(path: Path) -> set[str]:
    """The redis modules a file imports, at any depth but annotations."""
    names: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        for child in ast.walk(node):
            if isinstance(child, ast.Import):
                names.update(a.name for a in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                names.add(child.module)
    return {n for n in names if n.split(".")[0] == "redis"}


def test_only_the_broker_talks_to_redis() -> None:
    import re

    outside = [p for p in sorted(SRC.rglob("*.py")) if p.relative_to(SRC).parts[0] != "broker"]
    uses = [
        f"{path.relative_to(SRC)}:{n}: {line.strip()}"
        for path in outside
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(REDIS_USE, line)
    ]
    assert not uses, f"Redis commands outside broker/ (ask the broker for an intent): {uses}"

    importers = {path.relative_to(SRC).as_posix() for path in outside if redis_imports(path)}
    unlisted = sorted(importers - set(REDIS_IMPORTERS))
    assert not unlisted, f"{unlisted} import redis outside broker/: go through the broker"
    stale = sorted(set(REDIS_IMPORTERS) - importers)
    assert not stale, f"{stale} no longer import redis: drop them from REDIS_IMPORTERS"
