"""The embedded PostgreSQL is tuned for large datasets from its first start."""

from __future__ import annotations

import os

import psycopg
import pytest
from pydantic import ValidationError

from stldata.settings import Settings
from stldata.store.database import embedded_shared_buffers


def test_auto_is_a_quarter_of_memory_within_bounds() -> None:
    memory_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
    expected = min(max(memory_mb // 4, 128), 2048)

    assert embedded_shared_buffers("auto") == f"{expected}MB"
    assert embedded_shared_buffers("512MB") == "512MB"


def test_the_session_server_started_with_the_tuned_value(server_url: str) -> None:
    if os.environ.get("STLDATA_TEST_DATABASE_URL"):
        pytest.skip("an external test server is not started by the project")
    with psycopg.connect(server_url) as conn:
        # shared_buffers is counted in 8kB blocks.
        shown = conn.execute("SELECT setting::bigint * 8 / 1024 FROM pg_settings "
                             "WHERE name = 'shared_buffers'").fetchone()

    assert shown is not None
    assert f"{shown[0]}MB" == embedded_shared_buffers("auto")


@pytest.mark.parametrize("value", ["lots", "0MB", "512", "1TB"])
def test_a_bad_value_is_refused_by_name(value: str) -> None:
    with pytest.raises(ValidationError, match="embedded_shared_buffers"):
        Settings(embedded_shared_buffers=value)
