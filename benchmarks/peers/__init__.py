"""Optional peer comparison: the drain workload on Dramatiq, arq, RQ, Celery and BullMQ."""
