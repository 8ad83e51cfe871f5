"""Handler apps imported by module path (``tests.support.apps.e2e:app``), by real worker
processes (the repository root is on their PYTHONPATH) and by ``load_app``."""
