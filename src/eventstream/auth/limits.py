"""Rate limits: what the authorize script's GCRA reply means for one request.

The buckets are GCRA on the Redis server's clock (``TIME``), charged inside
``authorize.lua``, so a limit holds across any number of API processes. A request
costs 1; a batch costs its number of events. The script answers with the bucket's
state after the charge (or after refusing it); ``outcome`` turns that into the
``RateLimit-*`` fields for an allowed request, or into the refusal: 429 while waiting
helps, 413 when the request alone is more than the burst.
"""

from __future__ import annotations

import math
from typing import Any

from eventstream.errors import PayloadTooLarge, RateLimited

OVER_LIMIT = 4  # the script's code for "over the limit, nothing charged"


def outcome(reply: list[Any], cost: int, whose: str) -> dict[str, str]:
    """RateLimit-* fields for an allowed request (none when no rate applies); raises
    RateLimited (429) or, for a request larger than the burst, PayloadTooLarge (413:
    waiting cannot help). ``whose``: the bucket's owner, for the messages."""
    code, limit, left, reset_us, retry_us, window_s = (
        int(reply[0]),
        int(reply[4]),
        int(reply[5]),
        int(reply[6]),
        int(reply[7]),
        int(reply[8]),
    )
    if limit <= 0:
        return {}
    fields = {
        "RateLimit-Policy": f"{limit};w={max(1, window_s)}",
        "RateLimit-Limit": str(limit),
        "RateLimit-Remaining": str(max(0, left)),
        "RateLimit-Reset": str(math.ceil(reset_us / 1_000_000)),
    }
    if code == OVER_LIMIT:
        if retry_us < 0:
            raise PayloadTooLarge(
                f"this request counts as {cost} events, more than the burst of {limit} that {whose} "
                f"may send at once: send at most {limit} events per request"
            )
        retry_s = max(1, math.ceil(retry_us / 1_000_000))
        raise RateLimited(
            f"rate limit of {whose} exceeded: this request counts as {cost} event(s) and "
            f"{max(0, left)} of {limit} are left; retry in {retry_s} s. Nothing was done.",
            retry_s,
            fields,
        )
    return fields
