"""API keys, scopes, rate limits and the audit trail (see eventstream.auth.guard)."""
