"""Failure reasons from hostile exceptions: capped, encodable, and never raising."""

from __future__ import annotations

import pytest

from eventstream.worker.reasons import PART_LIMIT, REASON_LIMIT, TRACEBACK_LIMIT, describe, format_traceback


class BadStr(Exception):
    def __str__(self) -> str:
        raise ValueError("no")


class ExitingStr(Exception):
    def __str__(self) -> str:
        raise SystemExit(3)


def raised(exc: BaseException) -> BaseException:
    try:
        raise exc
    except BaseException as caught:
        return caught


def test_a_lone_surrogate_is_escaped_so_the_reason_can_be_stored() -> None:
    reason = describe(raised(FileNotFoundError("no such file: bad \udcff.txt")))
    assert reason == "FileNotFoundError: no such file: bad \\udcff.txt"
    reason.encode()  # would raise UnicodeEncodeError unescaped
    format_traceback(raised(RuntimeError("bad \ud800"))).encode()


@pytest.mark.parametrize("cls", [BadStr, ExitingStr])
def test_a_str_that_raises_still_gives_a_reason(cls: type[Exception]) -> None:
    exc = raised(cls())
    raised_by_str = "ValueError" if cls is BadStr else "SystemExit"
    assert describe(exc) == f"{cls.__name__}: <the exception's __str__ raised {raised_by_str}>"
    assert cls.__name__ in format_traceback(exc)


def test_a_huge_message_is_capped_and_says_so() -> None:
    exc = raised(RuntimeError("x" * 1_000_000))
    reason = describe(exc)
    assert len(reason) < REASON_LIMIT + 50
    assert reason.endswith(f"[{len('RuntimeError: ') + 1_000_000 - REASON_LIMIT} characters cut]")


def _ping(n: int) -> None:  # ping and pong alternate: Python does not fold their frames
    if n == 0:
        raise RuntimeError("m" * 1_000_000)
    _pong(n - 1)


def _pong(n: int) -> None:
    _ping(n - 1)


def test_the_traceback_keeps_the_innermost_frames_and_the_message_head() -> None:
    try:
        _ping(200)
    except RuntimeError as exc:
        text = format_traceback(exc)
    assert len(text) <= TRACEBACK_LIMIT + PART_LIMIT + 100
    assert "raise RuntimeError" in text  # the frame that raised is kept
    assert "in _ping" in text
    assert "RuntimeError: mmmm" in text  # the message's head, cut
    assert "characters cut]" in text
    assert text.startswith("[")  # the outermost frames are cut, and it says so
    assert "outer parts of the traceback cut]" in text.splitlines()[0]


def test_base_exceptions_and_empty_messages() -> None:
    assert describe(raised(SystemExit())) == "SystemExit"
    assert describe(raised(KeyboardInterrupt())) == "KeyboardInterrupt"
    assert describe(raised(SystemExit(2))) == "SystemExit: 2"
