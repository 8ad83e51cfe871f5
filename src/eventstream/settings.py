"""One typed settings object, read from EVENTSTREAM_* variables and ./.env; fails fast.

Durations are seconds (float) unless the name says otherwise; CLI flags override.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qs, urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# A Redis key prefix (the deployment's hash tag): also checked by broker.keys.Keys.
PREFIX_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="EVENTSTREAM_",
        env_file=".env",
        extra="ignore",
        frozen=True,
        # A validation error must not echo the input: it holds every setting, passwords included.
        hide_input_in_errors=True,
    )

    # Out of repr: either URL may hold a password.
    redis_url: str | None = Field(
        None, repr=False, description="Redis URL (redis://, rediss://, unix://). Unset: an embedded server."
    )
    database_url: str | None = Field(
        None,
        repr=False,
        description="SQLAlchemy URL of the processed-event store. Unset: SQLite in data_dir.",
    )
    data_dir: Path = Field(Path("data"), description="Where the embedded Redis and SQLite live.")
    prefix: str = Field("eventstream", description="Prefix (hash tag) of every Redis key.")
    partitions: int = Field(
        1,
        ge=1,
        le=256,
        description="Partitions of the deployment: each has its own stream, retries, DLQ and "
        "dedupe keys under one hash tag, so a Redis Cluster spreads them over its primaries. "
        "Recorded in Redis at the first start; a process with another count refuses to start.",
    )

    # handler policy defaults (each handler may override)
    max_attempts: int = Field(5, ge=1, le=1000, description="Tries per event, the first included.")
    retry_delay: float = Field(0.5, ge=0, description="Seconds before the first retry.")
    retry_max_delay: float = Field(
        300.0, ge=0, description="Cap of every retry delay: the backoff and Retry(delay=...)."
    )
    handler_timeout: float = Field(30.0, gt=0, description="Seconds one try may take.")
    handler_cancel_grace: float = Field(
        5.0,
        gt=0,
        description="Seconds a handler cancelled at its timeout may take to stop before it is abandoned "
        "(its try recorded as failed, the worker going on without it).",
    )

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

    max_object_keys: int = Field(
        1000, ge=1, description="Most keys in one JSON object of a payload (422 beyond)."
    )
    max_string_length: int = Field(
        65_536, ge=1, description="Longest string (value or key) in a payload, in characters (422 beyond)."
    )

    # security
    metrics_public: bool = Field(False, description="Serve GET /metrics without an API key (scrapers).")
    root_path: str = Field(
        "",
        pattern=r"^(/[A-Za-z0-9._~-]+)*$",
        description="The path prefix a reverse proxy serves the API under (e.g. /eventstream), "
        "which it strips before passing requests on; empty: served at the root.",
    )
    ui_cookie_secure: bool | None = Field(
        None,
        description="Mark the dashboard's session cookie Secure; unset: when the request came over "
        "HTTPS. Set true behind a proxy that terminates TLS.",
    )
    ui_session_ttl: int = Field(
        8 * 3600,
        ge=60,
        le=30 * 86400,
        description="Seconds a dashboard sign-in lasts (the session cookie and its record in Redis).",
    )
    cors_origins: str = Field(
        "", description="Comma-separated origins allowed by CORS ('*' for any); empty: CORS closed."
    )
    anonymous_rate: float = Field(
        0.0,
        ge=0,
        le=1_000_000,
        description="Events/s per client address for anonymous (loopback) use, 0.001 at least; 0: no limit.",
    )
    anonymous_burst: int = Field(
        0,
        ge=0,
        le=10_000_000,
        description="Events at once for anonymous use; 0: one second's worth of the rate.",
    )

    # HTTP server limits (api/server.py)
    max_head_bytes: int = Field(
        32_768, ge=1024, le=1_048_576, description="Largest request head (request line, headers); 431 beyond."
    )
    head_timeout: float = Field(
        10.0, gt=0, description="Seconds a request head may take, from the connection or its first byte; 408."
    )
    body_timeout: float = Field(10.0, gt=0, description="Seconds a request body may stall before 408.")
    max_connections: int = Field(
        1000, ge=0, description="Connections served at once; a request on one more gets 503. 0: no limit."
    )

    # redis client
    redis_timeout: float = Field(
        5.0, ge=0.5, description="Seconds to wait for one Redis reply (API: then 503; worker: retry)."
    )
    # What a 2xx at ingest promises beyond "in the primary's memory" (see broker.Durability).
    redis_wait_replicas: int = Field(
        0,
        ge=0,
        le=16,
        description="Replicas that must confirm an ingest write (WAIT) before the API answers 2xx; "
        "fewer in time: 503 with the event id, the event still queued.",
    )
    redis_wait_aof: bool = Field(
        False,
        description="Wait for the append-only file instead (WAITAOF, Redis >= 7.2, Valkey >= 8): "
        "the primary's own fsync and EVENTSTREAM_REDIS_WAIT_REPLICAS replicas' fsyncs.",
    )
    redis_wait_timeout: float = Field(
        1.0, gt=0, le=60, description="Seconds ingest waits for those confirmations."
    )
    # A managed Redis: TLS (rediss://) and ACL credentials. Each part of the credentials is
    # set once, in the URL or here (both is a configuration error, never a silent choice).
    redis_username: str | None = Field(
        None, description="Redis ACL user (or the URL's user part). Unset: the default user."
    )
    redis_password: SecretStr | None = Field(
        None, description="Password of the Redis ACL user, or requirepass (or the URL's). Never logged."
    )
    redis_tls_ca_file: Path | None = Field(
        None,
        description="PEM bundle of the CAs that sign the Redis server's certificate (rediss:// only). "
        "Unset: the system's CAs.",
    )
    redis_tls_cert_file: Path | None = Field(
        None, description="Client certificate (PEM) for Redis mutual TLS, with redis_tls_key_file."
    )
    redis_tls_key_file: Path | None = Field(None, description="Private key (PEM) of redis_tls_cert_file.")

    # logs
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["auto", "json", "console"] = "auto"

    # tracing
    tracing: bool = Field(
        False, description="OpenTelemetry spans for ingest and handler tries (needs eventstream[otel])."
    )

    # replay and retention
    replay_rate: float = Field(
        1000.0, ge=0.1, le=100_000, description="Default cap of replays, events/s (a request may lower it)."
    )
    retention: float = Field(
        7 * 86_400.0,
        ge=0,
        description="Seconds processed events stay in the store; 0: forever. At least the dedupe window.",
    )
    retention_interval: float = Field(
        300.0, gt=0, description="Seconds between prunes of the store (one worker at a time)."
    )
    retention_batch: int = Field(2000, ge=1, le=10_000, description="Rows deleted per short transaction.")

    @model_validator(mode="after")
    def _check_retention(self) -> Settings:
        if 0 < self.retention < self.dedupe_window:
            raise ValueError(
                f"EVENTSTREAM_RETENTION ({self.retention:g} s) is shorter than EVENTSTREAM_DEDUPE_WINDOW "
                f"({self.dedupe_window:g} s): the store must remember a processed event at least as long "
                "as a repeat of it can arrive; raise the retention, shorten the window, or set 0 to keep "
                "events forever"
            )
        return self

    @model_validator(mode="after")
    def _check_redis(self) -> Settings:
        if (self.redis_tls_cert_file is None) != (self.redis_tls_key_file is None):
            raise ValueError(
                "Redis mutual TLS needs both EVENTSTREAM_REDIS_TLS_CERT_FILE and "
                "EVENTSTREAM_REDIS_TLS_KEY_FILE"
            )
        if self.redis_url:
            problem = self.redis_url_problem(self.redis_url)
            if problem:
                raise ValueError(problem)
        if (
            self.redis_wait_replicas or self.redis_wait_aof
        ) and self.redis_wait_timeout >= self.redis_timeout:
            raise ValueError(
                f"EVENTSTREAM_REDIS_WAIT_TIMEOUT ({self.redis_wait_timeout:g}s) must be shorter than "
                f"EVENTSTREAM_REDIS_TIMEOUT ({self.redis_timeout:g}s), the wait for any Redis reply"
            )
        return self

    @field_validator(
        "redis_username",
        "redis_password",
        "redis_tls_ca_file",
        "redis_tls_cert_file",
        "redis_tls_key_file",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("redis_tls_ca_file", "redis_tls_cert_file", "redis_tls_key_file")
    @classmethod
    def _check_pem_file(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"{str(value)!r} is not a file (a PEM file is expected)")
        return value

    def redis_url_problem(self, url: str) -> str | None:
        """Why ``url`` cannot be used with the Redis TLS and credential settings, if it cannot.

        The message names settings, never a value (the URL may hold a password)."""
        tls = [
            f"EVENTSTREAM_{name.upper()}"
            for name in ("redis_tls_ca_file", "redis_tls_cert_file", "redis_tls_key_file")
            if getattr(self, name) is not None
        ]
        parts = urlsplit(url)
        if tls and parts.scheme != "rediss":
            return (
                f"{' and '.join(tls)} set, but the Redis URL is not rediss:// (it is {parts.scheme}://): "
                "TLS settings need a rediss:// URL; change the URL, or unset them"
            )
        query = parse_qs(parts.query)
        for part, setting in (("username", self.redis_username), ("password", self.redis_password)):
            in_url = bool(getattr(parts, part, None) or query.get(part))
            if in_url and setting is not None:
                return (
                    f"the Redis {part} is set twice, in EVENTSTREAM_REDIS_URL and in "
                    f"EVENTSTREAM_REDIS_{part.upper()}: keep one"
                )
        return None

    @field_validator("anonymous_rate")
    @classmethod
    def _check_anonymous_rate(cls, value: float) -> float:
        if 0 < value < 0.001:
            raise ValueError("a rate is 0 (no limit) or at least 0.001 events per second")
        return value

    @field_validator("tracing")
    @classmethod
    def _check_tracing(cls, value: bool) -> bool:
        if value and importlib.util.find_spec("opentelemetry.sdk") is None:
            raise ValueError("tracing needs OpenTelemetry: pip install 'eventstream[otel]'")
        return value

    @field_validator("prefix")
    @classmethod
    def _check_prefix(cls, value: str) -> str:
        if not PREFIX_RE.fullmatch(value):  # match() would let a final newline through
            raise ValueError(f"key prefix {value!r} must be 1-64 characters of letters, digits, '_.:-'")
        return value

    @property
    def store_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'events.db').resolve()}"


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment, with explicit (CLI) values on top."""
    clean = {k: v for k, v in overrides.items() if v is not None}
    return Settings(**clean)  # type: ignore[arg-type]
