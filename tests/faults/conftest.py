"""Fault scenarios reuse the end-to-end process helpers (tests/e2e/conftest.py): the
``cluster`` fixture, and the hook that attaches every process's logs to a failure."""

from __future__ import annotations

from tests.e2e.conftest import cluster, pytest_runtest_makereport

__all__ = ["cluster", "pytest_runtest_makereport"]
