"""scripts/_venv.sh (behind scripts/run and scripts/test): pip runs only when the venv is new
or the project's dependencies changed, so a restart works with the package index unreachable.

Each test copies the script into a small project of its own whose build backend lives in
the project (``backend-path``) and needs nothing from an index, and runs the script as
scripts/run does, for real: a real venv, a real pip. "Offline" is a package index on a
local port that accepts connections and closes them at once, counting them.
"""

from __future__ import annotations

import ensurepip
import os
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
WHEELS = Path(ensurepip.__file__).parent / "_bundled"  # pip's own wheel: a local "index"

PYPROJECT = """\
[build-system]
requires = []
build-backend = "backend"
backend-path = ["."]

[project]
name = "demo"
version = "0.1.0"

[project.optional-dependencies]
dev = []
"""

BACKEND = '''\
"""An in-tree build backend: an editable install of src/ as a .pth file; logs each build."""
import base64, hashlib, os, zipfile

NAME, VERSION = "demo", "0.1.0"


def get_requires_for_build_editable(config_settings=None):
    return []


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    with open("builds.log", "a") as log:
        log.write("build\\n")
    dist = f"{NAME}-{VERSION}.dist-info"
    files = {
        f"{NAME}.pth": os.path.abspath("src") + "\\n",
        f"{dist}/METADATA": f"Metadata-Version: 2.1\\nName: {NAME}\\nVersion: {VERSION}\\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n",
    }
    record = []
    for name, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(text.encode())}")
    record.append(f"{dist}/RECORD,,")
    wheel = f"{NAME}-{VERSION}-py3-none-any.whl"
    with zipfile.ZipFile(os.path.join(wheel_directory, wheel), "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
        archive.writestr(f"{dist}/RECORD", "\\n".join(record) + "\\n")
    return wheel
'''


class DeadIndex:
    """A local port that accepts connections and closes them at once; counts them."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/simple"
        self.connections = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "scripts").mkdir()
    shutil.copy(REPO / "scripts" / "_venv.sh", tmp_path / "scripts" / "_venv.sh")
    (tmp_path / "pyproject.toml").write_text(PYPROJECT)
    (tmp_path / "backend.py").write_text(BACKEND)
    (tmp_path / "src" / "demo").mkdir(parents=True)
    (tmp_path / "src" / "demo" / "__init__.py").write_text("ANSWER = 42\n")
    return tmp_path


@pytest.fixture
def dead_index() -> Iterator[DeadIndex]:
    index = DeadIndex()
    yield index
    index.close()


def venv(project: Path, extras: str = "", **pip: str) -> subprocess.CompletedProcess[str]:
    """Source scripts/_venv.sh as scripts/run does, then import the project from the venv."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "VIRTUAL_ENV"))}
    env.update({"PYTHON": sys.executable, "EXTRAS": extras, "PIP_RETRIES": "0", "PIP_TIMEOUT": "5", **pip})
    return subprocess.run(
        ["bash", "-c", 'source scripts/_venv.sh && .venv/bin/python -c "import demo; print(demo.ANSWER)"'],
        cwd=project, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


def online(project: Path, extras: str = "") -> subprocess.CompletedProcess[str]:
    return venv(project, extras, PIP_NO_INDEX="1", PIP_FIND_LINKS=str(WHEELS))


def offline(project: Path, index: DeadIndex, extras: str = "") -> subprocess.CompletedProcess[str]:
    return venv(project, extras, PIP_INDEX_URL=index.url)


def builds(project: Path) -> int:
    return len((project / "builds.log").read_text().splitlines())


@pytest.mark.timeout(300)
def test_a_restart_with_nothing_changed_needs_no_index(project: Path, dead_index: DeadIndex) -> None:
    first = online(project)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == "42"
    assert builds(project) == 1

    again = offline(project, dead_index)
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == "42"
    assert dead_index.connections == 0, "pip asked the package index although nothing changed"
    assert builds(project) == 1


@pytest.mark.timeout(300)
def test_a_change_of_dependencies_or_extras_installs_again(project: Path, dead_index: DeadIndex) -> None:
    assert online(project).returncode == 0
    with (project / "pyproject.toml").open("a") as f:
        f.write("\n[tool.demo]\nchanged = true\n")
    assert online(project).returncode == 0
    assert builds(project) == 2, "a changed pyproject.toml is installed again"

    assert online(project, "[dev]").returncode == 0
    assert builds(project) == 3, "extras not installed yet are installed"
    for extras in ("[dev]", ""):  # a dev install serves a plain one too
        done = offline(project, dead_index, extras)
        assert done.returncode == 0, done.stderr
    assert builds(project) == 3
    assert dead_index.connections == 0
