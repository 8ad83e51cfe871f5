"""One typed settings object, read from EVENTSTREAM_* variables and ./.env; fails fast.

Durations are seconds (float) unless the name says otherwise; CLI flags override.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from eventstream.broker.keys import Keys


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EVENTSTREAM_", env_file=".env", extra="ignore", frozen=True)

    redis_url: str | None = Field(
        None, description="Redis URL (redis://, rediss://, unix://). Unset: an embedded server."
    )
    database_url: str | None = Field(
        None, description="SQLAlchemy URL of the processed-event store. Unset: SQLite in data_dir."
    )
    data_dir: Path = Field(Path("data"), description="Where the embedded Redis and SQLite live.")
    prefix: str = Field("eventstream", description="Prefix (hash tag) of every Redis key.")

    # handler policy defaults (each handler may override)
    max_attempts: int = Field(5, ge=1, le=1000, description="Tries per event, the first included.")
    retry_delay: float = Field(0.5, ge=0, description="Seconds before the first retry.")
    retry_max_delay: float = Field(300.0, ge=0, description="Cap of the exponential backoff.")
    handler_timeout: float = Field(30.0, gt=0, description="Seconds one try may take.")

    # worker
    concurrency: int = Field(256, ge=1, description="Handlers running at once per worker.")
    batch_size: int = Field(500, ge=1, le=10_000, description="Entries read per XREADGROUP.")
    sync_threads: int = Field(32, ge=1, description="Threads for synchronous handlers.")
    visibility_timeout: float = Field(
        30.0, gt=0, description="Seconds before a silent worker's events are reclaimed."
    )
    max_deliveries: int = Field(
        3, ge=1, description="Deliveries without an outcome (crashes) before the DLQ."
    )
    shutdown_grace: float = Field(30.0, ge=0, description="Seconds to finish in-flight work.")
    poll_interval: float = Field(
        0.05, gt=0, description="Seconds between retry-promotion and reclaim checks."
    )

    # ingest
    dedupe_window: float = Field(86_400.0, gt=0, description="Seconds an idempotency key lasts.")
    max_body_bytes: int = Field(1_048_576, ge=1024, description="Largest request body (413).")
    max_batch: int = Field(1000, ge=1, description="Most events in one POST /events/batch.")
    max_depth: int = Field(32, ge=1, description="Deepest JSON nesting accepted in a payload.")
    max_backlog: int = Field(
        1_000_000,
        ge=0,
        description="Live events (queued + in flight + scheduled) over which ingest answers 503; 0: none.",
    )
    max_memory_ratio: float = Field(
        0.9,
        ge=0,
        le=1,
        description="Share of Redis maxmemory past which ingest sheds load with 503; 0: no bound.",
    )

    # redis client
    redis_timeout: float = Field(
        5.0, ge=0.5, description="Seconds to wait for one Redis reply (API: then 503; worker: retry)."
    )

    # logs
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["auto", "json", "console"] = "auto"

    @field_validator("prefix")
    @classmethod
    def _check_prefix(cls, value: str) -> str:
        Keys(value)  # raises ValueError with a readable message
        return value

    @cached_property
    def keys(self) -> Keys:
        return Keys(self.prefix)

    @property
    def store_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'events.db').resolve()}"


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment, with explicit (CLI) values on top."""
    clean = {k: v for k, v in overrides.items() if v is not None}
    return Settings(**clean)  # type: ignore[arg-type]
