"""The read API's pooled connections are checked after idling, so a server restart or a
killed backend costs no request an error."""

from __future__ import annotations

import time

import sqlalchemy as sa

from stldata.api.app import create_app
from stldata.runtime import Runtime

RECORDS = "/api/v1/datasets/slmpd-crime/records?limit=1"


def test_a_connection_killed_while_idle_is_replaced_unseen(loaded: Runtime) -> None:
    app = create_app(loaded)
    model = app.extensions["stldata.read_model"]
    client = app.test_client()
    assert client.get(RECORDS).status_code == 200
    with model.engine.connect() as conn:
        pooled = {int(r[0]) for r in conn.execute(sa.text(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND application_name = ''"))}
        mine = int(conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one())
    # Every other connection of this database, the app's pooled ones among them.
    with loaded.database.connect(autocommit=True) as admin:
        for pid in pooled - {mine}:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        admin.execute("SELECT pg_terminate_backend(%s)", (mine,))

    time.sleep(1.2)  # longer than the idle time after which a connection is checked
    responses = [client.get(RECORDS).status_code for _ in range(3)]

    assert responses == [200, 200, 200]
