"""The Redis work of a benchmark phase, node by node: CPU, commands, events.

Each node is asked directly (a plain client of its own, not the cluster client) for
INFO cpu (used_cpu_sys + used_cpu_user: the whole server process, its background
threads included) and INFO commandstats, before and after the phase. The INFO calls
themselves are left out of the command counts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import redis


@dataclass(frozen=True)
class Node:
    """One server whose work is measured: the single server, or a cluster node."""

    name: str
    url: str
    role: str = "primary"  # or "replica": its work is shown, not counted as the client's


@dataclass
class Usage:
    """CPU seconds and calls by command (lower case), since the server started."""

    cpu_s: float = 0.0
    calls: dict[str, int] = field(default_factory=dict)

    def __sub__(self, earlier: Usage) -> Usage:
        calls = {c: n - earlier.calls.get(c, 0) for c, n in self.calls.items()}
        return Usage(self.cpu_s - earlier.cpu_s, {c: n for c, n in calls.items() if n and c != "info"})

    @property
    def commands(self) -> int:
        return sum(self.calls.values())


def usage(nodes: list[Node]) -> dict[str, Usage]:
    out = {}
    for node in nodes:
        with redis.Redis.from_url(node.url, decode_responses=True, socket_timeout=5) as client:
            cpu: dict[str, Any] = client.info("cpu")
            stats: dict[str, Any] = client.info("commandstats")
        calls = {name.removeprefix("cmdstat_"): int(s["calls"]) for name, s in stats.items()}
        out[node.url] = Usage(float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"]), calls)
    return out


def work(
    nodes: list[Node], before: dict[str, Usage], events: int, events_by_node: dict[str, int]
) -> dict[str, Any]:
    """The figures of a phase that moved ``events`` events: the Redis CPU per event of the
    primaries together (what one server does alone), and per node its CPU per event and
    its shares of the primaries' commands and of the events."""
    after = usage(nodes)
    spent = {n.url: after[n.url] - before[n.url] for n in nodes}
    primaries = [n for n in nodes if n.role == "primary"]
    commands = sum(spent[n.url].commands for n in primaries) or 1
    per_node = []
    for node in nodes:
        used = spent[node.url]
        row: dict[str, Any] = {
            "node": node.name,
            "role": node.role,
            "cpu_s": round(used.cpu_s, 3),
            "cpu_us_per_event": round(used.cpu_s * 1e6 / max(events, 1), 2),
            "commands": used.commands,
            "calls": dict(sorted(used.calls.items(), key=lambda item: -item[1])),
        }
        if node.role == "primary":
            row["commands_share"] = round(used.commands / commands, 3)
            row["events_share"] = round(events_by_node.get(node.url, 0) / max(events, 1), 3)
        per_node.append(row)
    return {
        "events": events,
        "cpu_us_per_event": round(sum(spent[n.url].cpu_s for n in primaries) * 1e6 / max(events, 1), 2),
        "nodes": per_node,
    }


def rates(nodes: list[Node], before: dict[str, Usage], seconds: float) -> dict[str, float]:
    """Commands per second the primaries ran since ``before`` (INFO excluded), by command
    and in all (``all``)."""
    after = usage(nodes)
    calls: dict[str, int] = {}
    for node in nodes:
        if node.role == "primary":
            for command, n in (after[node.url] - before[node.url]).calls.items():
                calls[command] = calls.get(command, 0) + n
    out = {c: round(n / seconds, 1) for c, n in sorted(calls.items(), key=lambda item: -item[1])}
    out["all"] = round(sum(calls.values()) / seconds, 1)
    return out
