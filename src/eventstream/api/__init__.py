"""The HTTP API."""

from eventstream.api.app import create_app

__all__ = ["create_app"]
