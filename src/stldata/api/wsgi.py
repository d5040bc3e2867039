"""The read API as a WSGI application object, for production servers.

``stldata serve`` runs a threaded development-grade server that is enough on a laptop.
Operators who serve real traffic run a worker process per CPU instead, each with a few
threads for the requests waiting on PostgreSQL::

    granian --interface wsgi --workers 2 --blocking-threads 4 --port 5001 stldata.api.wsgi:app
    gunicorn --workers 2 --threads 4 --bind 127.0.0.1:5001 stldata.api.wsgi:app

Both are tested (tests/test_wsgi_servers.py); granian, whose HTTP side is compiled, answers
a records page about a fifth sooner than gunicorn's threaded workers (docs/benchmarks.md).
Each worker reads the same ``STLDATA_*`` settings and shares the same PostgreSQL (the
embedded one is attached to, not started twice), and listens for snapshot commits on a
connection of its own. Migrations run on import, as they do for ``stldata serve``, so a
worker never serves from a schema older than its code.
"""

from __future__ import annotations

from stldata.api.app import create_app
from stldata.logconfig import configure_logging
from stldata.runtime import Runtime
from stldata.settings import get_settings

configure_logging(get_settings().log_level)
app = create_app(Runtime.start())
