"""Who may do what: API keys, the scope policy, the guard's decisions, rate limits and
the audit trail. Pure of HTTP: the API reads requests and answers (eventstream.api.guard)."""
