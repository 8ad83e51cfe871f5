"""The ``eventstream`` command run as an operator runs it: a real subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import NamedTuple


class Run(NamedTuple):
    code: int
    stdout: str
    stderr: str


def run_cli(
    *args: str,
    url: str | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 60,
    input: str | None = None,
) -> Run:
    """``python -m eventstream ARGS`` with a wide terminal (tables unwrapped); its exit code and
    output. ``input``: its stdin (else none)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("EVENTSTREAM_")}
    clean.update({"COLUMNS": "220", "NO_COLOR": "1", "TERM": "dumb"})
    if url is not None:
        clean["EVENTSTREAM_API_URL"] = url
    clean.update(env or {})
    done = subprocess.run(
        [sys.executable, "-m", "eventstream", *args],
        capture_output=True,
        text=True,
        env=clean,
        timeout=timeout,
        input=input,
        stdin=subprocess.DEVNULL if input is None else None,
        check=False,
    )
    return Run(done.returncode, done.stdout, done.stderr)
