"""The ``stldata`` command line."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

import click

from stldata.errors import StlDataError
from stldata.logconfig import configure_logging
from stldata.settings import get_settings

log = logging.getLogger("stldata.cli")


def _runtime() -> Any:
    from stldata.runtime import Runtime

    return Runtime.start()


class _Group(click.Group):
    """Turn the project's own errors into one clear line and exit code 1."""

    def invoke(self, ctx: click.Context) -> Any:
        import psycopg
        import sqlalchemy

        try:
            return super().invoke(ctx)
        except StlDataError as exc:
            _fail(exc.message)
        except (psycopg.OperationalError, sqlalchemy.exc.OperationalError) as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            _fail(f"cannot reach PostgreSQL ({reason}); check STLDATA_DATABASE_URL or "
                  "STLDATA_HOME")
        except OSError as exc:
            _fail(f"{exc.strerror or exc}: {exc.filename or ''} (check STLDATA_HOME and the "
                  "paths given)")


def _fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(1)


@click.group(cls=_Group)
@click.version_option(package_name="stldata")
def main() -> None:
    """STL Data API: ingest St. Louis public data, project it, serve it."""
    from pydantic import ValidationError

    try:
        settings = get_settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"STLDATA_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}"
            for e in exc.errors())
        _fail(f"invalid setting: {problems}")
        return
    configure_logging(settings.log_level)


@main.command()
def migrate() -> None:
    """Start the database if embedded and apply schema migrations."""
    rt = _runtime()
    click.echo(f"database ready: {rt.database.safe_url()}")


@main.command()
def datasets() -> None:
    """List the datasets in the catalog."""
    from stldata.catalog import Catalog

    for dataset in Catalog.load(get_settings().catalog_dir):
        click.echo(f"{dataset.id:24} {dataset.mode:9} {dataset.title}")


def _progress_bar(label: str) -> Callable[[int], Callable[[int], None]] | None:
    if not sys.stderr.isatty():
        return None

    def open_bar(total: int) -> Callable[[int], None]:
        bar = click.progressbar(length=total, label=label, file=sys.stderr)
        bar.__enter__()

        def tick(n: int) -> None:
            bar.update(n)
            if bar.pos >= total:
                bar.__exit__(None, None, None)
        return tick
    return open_bar


@main.command()
@click.argument("dataset_ids", nargs=-1, metavar="DATASET...")
@click.option("--source", help="File, folder or http(s) URL; default: the bundled samples.")
@click.option("--all", "all_", is_flag=True, help="Ingest every dataset of the catalog.")
def ingest(dataset_ids: tuple[str, ...], source: str | None, all_: bool) -> None:
    """Publish a dataset's source to the log as a new snapshot.

    Byte-identical sources make no new snapshot. Exits non-zero when a source file is
    unusable as a whole; single bad rows and cells are quarantined instead.
    """
    from stldata.ingest.ingester import Ingester

    if not dataset_ids and not all_:
        raise click.UsageError("name a DATASET or pass --all")
    if source and (all_ or len(dataset_ids) > 1):
        raise click.UsageError("--source goes with exactly one DATASET")
    rt = _runtime()
    targets = [d.id for d in rt.catalog] if all_ else list(dataset_ids)
    datasets = [rt.catalog.get(i) for i in targets]
    producer = rt.producer()
    try:
        ingester = Ingester(rt.settings, rt.database, producer)
        for dataset in datasets:
            summary = ingester.ingest(dataset, source, progress=_progress_bar(dataset.id))
            click.echo(summary.line())
    finally:
        producer.close()


@main.command()
@click.option("--until-idle", is_flag=True, help="Exit once the read model has caught up.")
def project(until_idle: bool) -> None:
    """Consume the log and write the read model (runs until stopped)."""
    from stldata.projection.projector import run_supervised

    rt = _runtime()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        if until_idle:
            projector = rt.projector()
            try:
                projector.run(until_idle=True, stop=stop)
            finally:
                projector.close()
        else:
            run_supervised(rt.projector, stop=stop)
    except KeyboardInterrupt:
        pass


def _serve_until_stopped(app: Any, host: str, port: int) -> None:
    """Serve on a threaded WSGI server until SIGINT or SIGTERM."""
    from werkzeug.serving import make_server

    server = make_server(host, port, app, threaded=True)

    def stop_serving(signum: int, _frame: object) -> None:
        # shutdown() waits for serve_forever() in this very thread, so call it from another.
        log.info("received %s; stopping", signal.Signals(signum).name)
        threading.Thread(target=server.shutdown, daemon=True).start()

    # Installed explicitly: a shell that starts us in the background ignores SIGINT.
    signal.signal(signal.SIGINT, stop_serving)
    signal.signal(signal.SIGTERM, stop_serving)
    click.echo(f"STL Data API on http://{host}:{port}/ (Swagger UI at "
               f"http://{host}:{port}/docs); Ctrl-C stops")
    sys.stdout.flush()
    server.serve_forever()


@main.command()
@click.option("--port", type=click.IntRange(1, 65535),
              help="Port (default STLDATA_API_PORT, 5001).")
@click.option("--host", help="Address (default STLDATA_API_HOST, 127.0.0.1).")
def serve(port: int | None, host: str | None) -> None:
    """Run the read API alone."""
    from stldata.api.app import create_app

    rt = _runtime()
    _serve_until_stopped(create_app(rt), host or rt.settings.api_host,
                         port or rt.settings.api_port)


@main.command()
@click.option("--port", type=click.IntRange(1, 65535),
              help="Port (default STLDATA_API_PORT, 5001).")
@click.option("--no-ingest", is_flag=True, help="Serve what is stored without ingesting.")
def up(port: int | None, no_ingest: bool) -> None:
    """Run the whole main job: ingest the catalog, project it, serve the API.

    The projector keeps running beside the API, so later ingests show up. Ctrl-C stops
    everything, the embedded PostgreSQL included.
    """
    from stldata.api.app import create_app
    from stldata.ingest.ingester import Ingester

    rt = _runtime()
    if not no_ingest:
        producer = rt.producer()
        try:
            ingester = Ingester(rt.settings, rt.database, producer)
            for dataset in rt.catalog:
                click.echo(ingester.ingest(dataset, progress=_progress_bar(dataset.id)).line())
        finally:
            producer.close()

    from stldata.projection.projector import run_supervised

    projector = rt.projector()
    stop = threading.Event()
    try:
        projector.run(until_idle=True)
    finally:
        projector.close()
    background = threading.Thread(target=run_supervised, args=(rt.projector,),
                                  kwargs={"stop": stop}, name="projector", daemon=True)
    background.start()

    try:
        _serve_until_stopped(create_app(rt), rt.settings.api_host,
                             port or rt.settings.api_port)
    finally:
        stop.set()
        background.join(timeout=10)
        click.echo("stopped", err=True)


@main.command()
def status() -> None:
    """Show, per dataset, the last committed snapshot and the log lag."""
    from stldata.projection.projector import GROUP_ID, log_lag

    rt = _runtime()
    with rt.database.connect() as conn:
        rows = conn.execute(
            "SELECT dataset_id, max(id) FILTER (WHERE status = 'committed'), "
            "count(*) FILTER (WHERE status = 'pending') FROM snapshots GROUP BY dataset_id"
        ).fetchall()
        last = {str(r[0]): (r[1], r[2]) for r in rows}
        for dataset in rt.catalog:
            data = rt.consumer(GROUP_ID)
            control = rt.consumer(GROUP_ID + "-control")
            lag = log_lag(conn, data, control, [dataset.topic])
            snap, pending = last.get(dataset.id, (None, 0))
            click.echo(f"{dataset.id:24} last snapshot {snap or '-':>6}  pending {pending}  "
                       f"lag {lag}")
            data.close()
            control.close()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
