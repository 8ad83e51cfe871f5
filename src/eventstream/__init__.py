"""EventStream: durable event processing on Redis Streams.

Users import from here only::

    from eventstream import EventStream, Event, PermanentError, Retry
"""

__version__ = "0.1.0"

from eventstream.app import EventStream
from eventstream.errors import EventStreamError, PermanentError, Retry
from eventstream.event import Event
from eventstream.results import Accepted, Rejected

__all__ = [
    "Accepted",
    "Event",
    "EventStream",
    "EventStreamError",
    "PermanentError",
    "Rejected",
    "Retry",
    "__version__",
]
