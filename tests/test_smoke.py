from eventstream.app import EventStream
from eventstream.broker import Broker
from eventstream.event import Event
from eventstream.incoming import IncomingEvent
from eventstream.ingest.accept import enqueue, now_ms, to_envelope
from eventstream.settings import Settings
from eventstream.store import SqlStore
from tests.support.workers import run_burst


async def test_event_goes_through(settings: Settings, broker: Broker, store: SqlStore) -> None:
    seen: list[str] = []
    app = EventStream()

    @app.handler("A")
    async def handle(event: Event) -> None:
        seen.append(event.id)

    item = to_envelope(IncomingEvent(type="A", payload={"x": 1}), None, now_ms())
    [accepted] = await enqueue(broker, [item], 60_000)
    await run_burst(app, settings, broker, store)
    assert seen == [accepted.event_id]
    assert await store.existing([accepted.event_id]) == {accepted.event_id}
    counters = await broker.counters()
    assert counters["received"] == 1
    assert counters["processed"] == 1
