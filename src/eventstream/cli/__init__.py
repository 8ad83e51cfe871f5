"""The ``eventstream`` command: the Typer app (``cli``, in :mod:`.common`) and its commands.

Each command, or group of subcommands, lives in a module of its own here and registers
itself on ``cli`` when imported. ``eventstream --help`` lists the commands in the order
they are registered here, then the groups. A module imports at its top only what its options need, so that
help comes fast (see :mod:`.common`).
"""

from __future__ import annotations

import sys

import typer

from eventstream.cli.common import cli
from eventstream.version import __version__

# isort: off
from eventstream.cli import up as _up  # noqa: F401  up
from eventstream.cli import serve as _serve  # noqa: F401  api, worker
from eventstream.cli import audit as _audit  # noqa: F401  audit
# isort: on

__all__ = ["cli", "main"]


@cli.command()
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


from eventstream.cli import db as _db  # noqa: E402, F401  db ...
from eventstream.cli import keys as _keys  # noqa: E402, F401  keys ...
from eventstream.cli import ops as _ops  # noqa: E402, F401  stats, dlq ..., events ...
from eventstream.cli import procfile as _procfile  # noqa: E402, F401  procfile
from eventstream.cli import replay as _replay  # noqa: E402, F401  replay
from eventstream.cli import send as _send  # noqa: E402, F401  send


def main() -> None:
    """The ``eventstream`` command. Output never fails it: a closed stdout ends it with 0."""
    from eventstream.logs import OutputClosed, SafeStream, safe

    sys.stdout = SafeStream(sys.stdout, end_on_broken_pipe=True)
    sys.stderr = safe(sys.stderr)
    try:
        cli()
    except OutputClosed:  # `eventstream dlq list | head`: the reader has what it wanted
        sys.exit(0)
