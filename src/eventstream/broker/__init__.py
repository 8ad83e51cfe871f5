"""The only code that sends Redis commands. See keys.py for the key layout."""

from eventstream.broker.broker import Broker, merge_snapshots
from eventstream.broker.connection import connect
from eventstream.broker.durability import Durability
from eventstream.broker.entries import (
    DeadEntry,
    DeadFilter,
    DeadTally,
    Located,
    Ref,
    StreamEntry,
    position_key,
)
from eventstream.broker.fanout import Partition
from eventstream.broker.keys import GROUP, Keys, Layout, order_digest
from eventstream.broker.scripts import Completion, DeadLetter, ScheduledRetry, key_limits

__all__ = [
    "GROUP",
    "Broker",
    "Completion",
    "DeadEntry",
    "DeadFilter",
    "DeadLetter",
    "DeadTally",
    "Durability",
    "Keys",
    "Layout",
    "Located",
    "Partition",
    "Ref",
    "ScheduledRetry",
    "StreamEntry",
    "connect",
    "key_limits",
    "merge_snapshots",
    "order_digest",
    "position_key",
]
