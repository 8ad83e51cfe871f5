"""What the sync and async clients share: the constructor, its options and headers."""

from __future__ import annotations

import os
from typing import Generic, TypeVar

from eventstream.client import rules

TransportT = TypeVar("TransportT")

API_KEY_ENV = "EVENTSTREAM_API_KEY"
DEFAULT_PAGE = 100


class BaseClient(Generic[TransportT]):
    """The constructor both clients share; subclasses open their own httpx client."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        timeout_s: float = 10.0,
        max_attempts: int = 6,
        retry_budget_s: float = 30.0,
        retry_base_s: float = 0.1,
        retry_max_delay_s: float = 5.0,
        max_batch: int = 1000,
        max_body_bytes: int = 1_048_576,
        transport: TransportT | None = None,
    ) -> None:
        self.base_url = rules.check_base_url(base_url)
        self.options = rules.Options(
            timeout_s=timeout_s,
            max_attempts=max_attempts,
            retry_budget_s=retry_budget_s,
            retry_base_s=retry_base_s,
            retry_max_delay_s=retry_max_delay_s,
            max_batch=max_batch,
            max_body_bytes=max_body_bytes,
        )
        key = api_key if api_key is not None else os.environ.get(API_KEY_ENV)
        self._open(rules.base_headers(key), transport)

    def _open(self, headers: dict[str, str], transport: TransportT | None) -> None:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.base_url!r})"
