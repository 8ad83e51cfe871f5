"""Background processing: read, dispatch, settle, retry, reclaim."""

from eventstream.worker.runner import Worker

__all__ = ["Worker"]
