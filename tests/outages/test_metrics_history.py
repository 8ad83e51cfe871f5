"""The metrics history's sampler (the loop every API and worker process runs) through a
Redis killed and started again: it lives on, warns once, backs off, and samples again."""

from __future__ import annotations

import asyncio
import time

from structlog.testing import capture_logs

from eventstream.broker import Broker, Keys, connect
from eventstream.embedded import EmbeddedRedis
from eventstream.ops import history
from tests.support.waiting import wait_until

STEP_S = 0.2  # a short step, so that the test sees many of them


async def test_the_sampler_survives_redis_going_away_and_coming_back(
    private_redis: EmbeddedRedis, prefix: str
) -> None:
    redis = await connect(private_redis.url, timeout=1.0)
    broker = Broker(redis, Keys(prefix))
    task = asyncio.create_task(history.run(broker, 10_000, STEP_S))
    try:
        with capture_logs() as logs:

            async def samples() -> int:
                return int(await redis.xlen(broker.keys.history))

            async def sampled(n: int) -> bool:
                return await samples() >= n

            await wait_until(lambda: sampled(3), within=5, what="three samples")
            private_redis.kill()
            down_at = time.monotonic()
            await wait_until(lambda: any("history" in e["event"] for e in logs), within=5, what="a warning")
            await asyncio.sleep(3.0)  # 15 steps down
            assert not task.done()
            warnings = [e for e in logs if "history" in e["event"]]
            assert len(warnings) == 1, warnings  # once, not once per step
            assert warnings[0]["log_level"] == "warning"

            private_redis.start()  # same port, same data: the samples written before are back
            before = await samples()
            await wait_until(lambda: sampled(before + 2), within=10, what="sampling again")
            assert time.monotonic() - down_at < 20
            resumed = [e for e in logs if "history" in e["event"]][1:]
            assert [e["event"] for e in resumed] == ["metrics history: recording again"]
            assert resumed[0]["failed_tries"] >= 2  # tries while down, spaced by the backoff
            assert resumed[0]["failed_tries"] <= 8  # 15 steps, tried 1, 2, 4, 8 steps apart
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await redis.aclose()
        private_redis.kill()
    assert task.cancelled()
