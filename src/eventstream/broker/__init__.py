"""The only code that sends Redis commands. See keys.py for the key layout."""

from eventstream.broker.broker import Broker, DeadEntry, Located, StreamEntry, connect
from eventstream.broker.keys import GROUP, Keys

__all__ = ["GROUP", "Broker", "DeadEntry", "Keys", "Located", "StreamEntry", "connect"]
