"""What the tests share: helpers, factories and harnesses, one module per job.

Test modules and conftest files import from here and from nowhere else under tests/
(tests/unit/test_test_layout.py checks it); fixtures reach tests through pytest, from
tests/conftest.py (the shared ones) and each directory's conftest.py.

- servers      the servers the tests run against: the private Redis, PostgreSQL, skip or fail
- paths        the repository's files the tests read
- factories    settings, store rows, handler apps and the events the tests make
- broker       the broker tests' building blocks: envelopes, the scripts driven directly
- workers      a worker run in-process until idle, and what it left behind
- conservation the whole-state check and the conservation law, through the product's audit
- asgi         the real app in-process over ASGI, and its problem+json check
- auth         the app in a listen mode, and API keys made by the real registry
- processes    the end-to-end harness: real ``eventstream`` processes, their logs
- effects      the side-effect lines handlers write and tests count
- http         talking to a real API process: metrics, draining, paging
- outcomes     what clients were told against what became of it (the outage tests)
- checker      the fault tests' checker: what was sent, what became of it, what is wrong
- faults       the fault scenarios' app and process environment
- proxy        the TCP fault proxy of the outage tests
- tracing      the in-memory span collector
- cli          the ``eventstream`` command run as an operator runs it
- ui           the dashboard over HTTP as a browser drives it: CSRF tokens, sign-in, forms
- subpath      a reverse proxy serving an API under a sub-path, as nginx does
- browser      a real browser (Playwright, Debian's Chromium) and the complaints it reports
- waiting      bounded polling
- apps/        handler apps that real worker processes import by module path
"""
