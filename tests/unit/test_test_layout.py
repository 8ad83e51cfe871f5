"""The tests mirror the house: what they share is in tests/support, and only there.

No file under tests/ (conftest files included) imports another test module: imports of
``tests.*`` reach ``tests.support`` only, and fixtures arrive through pytest. A
conftest.py holds fixtures and hooks, no helpers. Handler apps named by module path
(``tests.support.apps.e2e:app``) live in tests/support too. Read from the files' own
import statements and string constants, with ast.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
SUPPORT = "tests.support"
MODULE_PATH = re.compile(r"^tests(\.[A-Za-z_]\w*)+(:\w*)?$")


def module_of(path: Path) -> str:
    parts = path.relative_to(TESTS.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(source: str, module: str, is_package: bool = False) -> set[str]:
    """Every ``tests`` module the source imports, at any depth, relative imports resolved."""
    package = module if is_package else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            names.add(base)
            if node.level or base in ("tests", SUPPORT):  # the names may be modules
                names.update(f"{base}.{a.name}" for a in node.names)
    return {n for n in names if n == "tests" or n.startswith("tests.")}


def outside_support(names: set[str]) -> list[str]:
    return sorted(n for n in names if n not in ("tests", SUPPORT) and not n.startswith(f"{SUPPORT}."))


def helpers_in_conftest(source: str) -> list[str]:
    """Top-level functions and classes of a conftest.py that are neither fixtures nor hooks."""
    found = []
    for node in ast.parse(source).body:
        if isinstance(node, ast.ClassDef):
            found.append(node.name)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            decorators = [ast.unparse(d) for d in node.decorator_list]
            if not node.name.startswith("pytest_") and not any("fixture" in d for d in decorators):
                found.append(node.name)
    return found


def named_modules(source: str) -> list[str]:
    """String constants that name a module under tests/ (``tests.x.y`` or ``tests.x:app``)."""
    return [
        node.value
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and MODULE_PATH.match(node.value)
    ]


FILES = sorted(TESTS.rglob("*.py"))


def test_no_file_imports_a_test_module() -> None:
    offenders = {
        str(p.relative_to(TESTS)): bad
        for p in FILES
        if (bad := outside_support(imported(p.read_text(), module_of(p), p.name == "__init__.py")))
    }
    assert offenders == {}, "import these from tests.support instead"


def test_a_conftest_holds_only_fixtures_and_hooks() -> None:
    offenders = {
        str(p.relative_to(TESTS)): bad
        for p in sorted(TESTS.rglob("conftest.py"))
        if (bad := helpers_in_conftest(p.read_text()))
    }
    assert offenders == {}, "move these to tests/support"


def test_apps_named_by_module_path_live_in_support() -> None:
    this = Path(__file__).resolve()
    named = {(str(p.relative_to(TESTS)), n) for p in FILES if p != this for n in named_modules(p.read_text())}
    assert named, "the worker and load_app tests name their apps by module path"
    assert {(f, n) for f, n in named if not n.startswith(SUPPORT)} == set()


def test_the_rules_catch_what_they_forbid() -> None:
    source = """
from tests.api.conftest import Api
import tests.e2e.apps
from tests import conftest
from tests.support import servers
from tests.support.asgi import running
from . import helpers

def f():
    from tests.cli.test_ops import post
"""
    assert outside_support(imported(source, "tests.api.test_x")) == [
        "tests.api",
        "tests.api.conftest",
        "tests.api.helpers",
        "tests.cli.test_ops",
        "tests.conftest",
        "tests.e2e.apps",
    ]
    assert outside_support(imported("from . import waiting\n", "tests.support.http")) == []
    assert outside_support(imported("from .apps import e2e\n", "tests.support", is_package=True)) == []
    conftest = """
LIMIT = 3

@pytest.fixture
def api(): ...

@pytest.fixture(params=[1, 2])
async def store(): ...

def pytest_runtest_makereport(item, call): ...

def helper(): ...

class Harness: ...
"""
    assert helpers_in_conftest(conftest) == ["helper", "Harness"]
    assert named_modules('APP = "tests.e2e.apps:app"\nX = "tests.support.apps.e2e:app"\nY = "tests"\n') == [
        "tests.e2e.apps:app",
        "tests.support.apps.e2e:app",
    ]
