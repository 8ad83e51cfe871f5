"""The HTTP producers: ``Client`` (blocking) and ``AsyncClient`` (asyncio), on httpx.

Import them from ``eventstream``. Both run the same rules (``rules``: idempotency
keys, retries, answers to results and exceptions); they differ only in how they send
and sleep. ``enqueue`` buffers events that a background sender delivers in batches
(``backlog``: its rules; ``senders``: the thread and the task).
"""

from eventstream.client.aio import AsyncClient
from eventstream.client.backlog import Undelivered
from eventstream.client.sync import Client

__all__ = ["AsyncClient", "Client", "Undelivered"]
