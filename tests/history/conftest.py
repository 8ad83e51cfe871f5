"""Replay tests drive the real app, like tests/api."""

from tests.api.conftest import api, make_api

__all__ = ["api", "make_api"]
