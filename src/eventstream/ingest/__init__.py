"""Ingest: a request's events validated, turned into envelopes and enqueued by the ingest
script (``accept``), load shed when the backlog or memory is too high (``backpressure``),
and the publish span when tracing is on (``tracing``)."""
