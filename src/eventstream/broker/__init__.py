"""The only code that sends Redis commands. See keys.py for the key layout."""

from eventstream.broker.broker import Broker
from eventstream.broker.connection import connect
from eventstream.broker.entries import DeadEntry, Located, StreamEntry
from eventstream.broker.keys import GROUP, Keys
from eventstream.broker.scripts import Completion, DeadLetter, ScheduledRetry

__all__ = [
    "GROUP",
    "Broker",
    "Completion",
    "DeadEntry",
    "DeadLetter",
    "Keys",
    "Located",
    "ScheduledRetry",
    "StreamEntry",
    "connect",
]
