"""Schemathesis over the OpenAPI documents of the read API and the command API.

Every operation gets generated requests, valid and invalid by its schema, and for routes
of a dataset also valid requests on a real dataset, so generated query parameters reach
the query code rather than stopping at a 404. No response may be a server error. The
examples per operation are bounded so both specs finish in a minute or two; every failing
operation is reported, not just the first.
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode

from stldata.api.app import create_app
from stldata.command.app import create_command_app
from stldata.command.jobs import JobStore
from stldata.command.keys import KeyStore
from stldata.command.worker import IngestWorker
from stldata.runtime import Runtime

from conftest import query

EXAMPLES = 25


def explore(strategy: Any, headers: dict[str, str] | None) -> int:
    """Send the strategy's cases; return how many, or raise on the first server error."""
    sent = [0]

    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              phases=[Phase.explicit, Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(case=strategy)
    def run(case: Any) -> None:
        sent[0] += 1
        case.call_and_validate(headers=headers, checks=[not_a_server_error])

    try:
        run()
    except Unsatisfiable:
        pass  # nothing to make invalid (an operation without parameters)
    return sent[0]


def fuzz(schema: Any, real_path: dict[str, str], headers: dict[str, str] | None = None
         ) -> tuple[int, list[str]]:
    """Run every operation; return how many cases ran and one line per failing operation."""
    failures: list[str] = []
    ran = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        label = f"{operation.method.upper()} {operation.path}"
        names = {p.name for p in operation.path_parameters}
        fixed = {k: v for k, v in real_path.items() if k in names}
        runs: list[tuple[GenerationMode, dict[str, str] | None]] = [
            (GenerationMode.POSITIVE, None), (GenerationMode.NEGATIVE, None)]
        if fixed and len(fixed) == len(names):
            runs.append((GenerationMode.POSITIVE, fixed))
        for mode, path in runs:
            try:
                ran += explore(operation.as_strategy(mode, path_parameters=path), headers)
            except Exception as exc:  # each operation's failure is reported, not raised
                first = str(exc).strip().splitlines()
                failures.append(f"{label} ({mode.value}{', real path' if path else ''}): "
                                + " | ".join(first[:12]))
    return ran, failures


def test_read_api_has_no_server_errors(loaded: Runtime) -> None:
    app = create_app(loaded)
    app.config["TESTING"] = True  # no rate limits
    schema = schemathesis.openapi.from_wsgi("/openapi.json", app)
    key = query(loaded, "SELECT _key FROM ds_csb_311 ORDER BY _key LIMIT 1")[0][0]
    snapshot = query(loaded, "SELECT max(id) FROM snapshots WHERE dataset_id = 'csb-311' "
                             "AND status = 'committed'")[0][0]
    ran, failures = fuzz(schema, {"dataset_id": "csb-311", "key": str(key),
                                  "sid": str(snapshot), "fmt": "json"})
    assert ran > 100
    assert not failures, "\n".join(failures)


def test_command_api_has_no_server_errors(runtime: Runtime) -> None:
    # Accepted ingests stay queued: this test is about the HTTP surface, and ingests of
    # generated bodies would outlive it (real ingests are in test_command_api.py).
    app = create_command_app(runtime, workers=IngestWorker(runtime, JobStore(
        runtime.database.engine(pool_size=1)), threads=0))
    app.config["TESTING"] = True
    _, token = KeyStore(runtime.database.engine(pool_size=1)).create("fuzz", ["ingest"])
    schema = schemathesis.openapi.from_wsgi("/openapi.json", app)
    ran, failures = fuzz(schema, {"dataset_id": "csb-311", "run_id": "0" * 32},
                         headers={"X-API-Key": token})
    assert ran > 50
    assert not failures, "\n".join(failures)
    # Without a key every operation but health is refused, never a server error.
    ran, failures = fuzz(schema, {"dataset_id": "csb-311"})
    assert not failures, "\n".join(failures)


@pytest.fixture(autouse=True)
def _quiet_schemathesis(monkeypatch: pytest.MonkeyPatch) -> None:
    # Schemathesis reads its own settings from the environment and a config file; the
    # tests pass everything explicitly.
    monkeypatch.delenv("SCHEMATHESIS_CONFIG", raising=False)
