"""A small TCP fault proxy for the outage tests: asyncio, in a thread of the test process.

It listens on a free loopback port and forwards every connection to a target
(Redis). The test switches its mode at any time; the mode applies at once to the
connections already open and to new ones:

- ``pass``          forward both ways
- ``latency(ms)``   hold every chunk ``ms`` milliseconds before forwarding it (both ways)
- ``blackhole``     keep accepting and reading, never forward or answer (bytes are dropped)
- ``reset``         reset every open connection (RST), and each new one as it arrives
- ``truncate(k)``   forward only the first ``k`` bytes of the next server reply, then
                    close that connection
- ``truncate(k, once=True)``  the same for one reply only, then ``pass`` again (a reply
                    lost after the server acted, e.g. ``truncate(0, once=True)``)

``stats`` counts what the proxy did, for the test's report.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from collections import Counter
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Mode:
    kind: str = "pass"  # pass | latency | blackhole | reset | truncate
    ms: int = 0
    k: int = 0
    once: bool = False

    def __str__(self) -> str:
        arg = self.ms if self.kind == "latency" else self.k if self.kind == "truncate" else ""
        return f"{self.kind}{f'({arg})' if arg else ''}{' once' if self.once else ''}"


PASS = Mode()
BLACKHOLE = Mode("blackhole")
RESET = Mode("reset")


def latency(ms: int) -> Mode:
    return Mode("latency", ms=ms)


def truncate(k: int, once: bool = False) -> Mode:
    return Mode("truncate", k=k, once=once)


class _Conn:
    def __init__(self, client: asyncio.StreamWriter, server: asyncio.StreamWriter) -> None:
        self.client = client
        self.server = server

    def reset(self) -> None:
        for writer in (self.client, self.server):
            sock = writer.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()

    def close(self) -> None:
        for writer in (self.client, self.server):
            writer.close()


class FaultProxy:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.mode = PASS
        self.port = 0
        self.stats: Counter[str] = Counter()
        self._conns: set[_Conn] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fault-proxy", daemon=True)
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> FaultProxy:
        self._thread.start()
        self._server = self._call(self._listen())
        return self

    def set(self, mode: Mode) -> None:
        """Switch mode; returns once it applies (open connections reset when ``reset``)."""
        self._call(self._set(mode))

    def close(self) -> None:
        if not self._thread.is_alive():
            return
        self._call(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    # ---- inside the proxy's loop ---------------------------------------------------

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    async def _listen(self) -> asyncio.Server:
        server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        return server

    async def _set(self, mode: Mode) -> None:
        self.mode = mode
        self.stats[f"set {mode}"] += 1
        if mode.kind == "reset":
            for conn in list(self._conns):
                conn.reset()
                self.stats["reset"] += 1

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for conn in list(self._conns):
            conn.reset()
        # Connections still being accepted or pumped (clients still running when the test
        # ended): end them here, or their sockets are left to the garbage collector and
        # warn in whichever test runs next.
        me = asyncio.current_task()
        tasks = [t for t in asyncio.all_tasks() if t is not me]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _accept(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        self.stats["accepted"] += 1
        try:
            s_reader, s_writer = await asyncio.open_connection(*self.target)
        except OSError:
            c_writer.transport.abort()
            return
        conn = _Conn(c_writer, s_writer)
        if self.mode.kind == "reset":
            self.stats["reset"] += 1
            conn.reset()
            return
        self._conns.add(conn)
        try:
            await asyncio.gather(
                self._pump(conn, c_reader, s_writer, upstream=True),
                self._pump(conn, s_reader, c_writer, upstream=False),
            )
        finally:
            self._conns.discard(conn)
            conn.close()

    async def _pump(
        self, conn: _Conn, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, upstream: bool
    ) -> None:
        try:
            while data := await reader.read(65536):
                mode = self.mode
                if mode.kind == "blackhole":
                    self.stats["bytes dropped"] += len(data)
                    continue
                if mode.kind == "latency":
                    await asyncio.sleep(mode.ms / 1000)
                if mode.kind == "reset":
                    conn.reset()
                    self.stats["reset"] += 1
                    return
                if mode.kind == "truncate" and not upstream:
                    if mode.once:
                        self.mode = PASS
                    writer.write(data[: mode.k])
                    await writer.drain()
                    self.stats["truncated"] += 1
                    conn.close()
                    return
                writer.write(data)
                await writer.drain()
            # EOF from this side: pass it on once everything read was forwarded
            if writer.can_write_eof():
                writer.write_eof()
        except (ConnectionError, OSError, RuntimeError):
            conn.reset()
