"""Second chances: the dead-letter queue (``dead``: list, delete, replay) and replay from
the store's history, both sent through one paced engine (``engine``)."""
