"""Second chances, in one package: ``engine`` (what every replay shares: the selection,
the pacing, the paging tokens, the send loop, and the ``Source`` interface), and its two
sources, ``history`` (the store's processed events, sent again as new events) and
``dead`` (the dead-letter queue: list, delete, and replay of the same events)."""
