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

from stldata.errors import StlDataError, TransientError, first_line
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
        except (psycopg.Error, sqlalchemy.exc.DBAPIError) as exc:
            from stldata.store.database import is_connection_error

            reason = first_line(exc)
            if is_connection_error(exc):
                _fail(f"cannot reach PostgreSQL ({reason}); check STLDATA_DATABASE_URL or "
                      "STLDATA_HOME")
            # PostgreSQL answered but refused a statement: a problem of the data or the
            # catalog, which checking the connection settings would not fix.
            _fail(f"PostgreSQL refused a statement: {reason}")
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
    """List the datasets in the catalog, then the entries that cannot be used and why."""
    from stldata.catalog import Catalog

    catalog = Catalog.load(get_settings().catalog_dir)
    for dataset in catalog:
        click.echo(f"{dataset.id:24} {dataset.mode:9} {dataset.title}")
    for entry in catalog.broken:
        click.echo(f"{entry.name:24} {'unusable':9} {entry.problem}")


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
    unusable as a whole; single bad rows and cells are quarantined instead. With several
    datasets, one that fails does not stop the others.
    """
    if not dataset_ids and not all_:
        raise click.UsageError("name a DATASET or pass --all")
    if source and (all_ or len(dataset_ids) > 1):
        raise click.UsageError("--source goes with exactly one DATASET")
    rt = _runtime()
    targets = [d.id for d in rt.catalog] if all_ else list(dataset_ids)
    datasets = [rt.catalog.get(i) for i in targets]
    failed = _ingest_each(rt, datasets, source)
    if all_:
        # Entries that cannot be used were left out of the catalog (and logged): they
        # count as failed, after the others were ingested.
        for entry in rt.catalog.broken:
            click.echo(f"error: {entry.name}: {entry.problem}", err=True)
            failed.append(entry.name)
    if failed:
        raise click.exceptions.Exit(1)


def _ingest_each(rt: Any, datasets: list[Any], source: str | None = None, *,
                 echo_summaries: bool = True) -> list[str]:
    """Ingest each dataset in turn; one whose source is unusable is reported on stderr
    and skipped, so it cannot keep the others from being ingested. Returns the ids of
    the datasets that failed."""
    from stldata.ingest.ingester import Ingester

    failed = []
    producer = rt.producer()
    try:
        ingester = Ingester(rt.settings, rt.database, producer)
        for dataset in datasets:
            try:
                summary = ingester.ingest(dataset, source,
                                          progress=_progress_bar(dataset.id))
            except StlDataError as exc:
                click.echo(f"error: {dataset.id}: {exc}", err=True)
                failed.append(dataset.id)
                continue
            if echo_summaries:
                click.echo(summary.line())
    finally:
        producer.close()
    return failed


@main.command()
@click.argument("dataset_id", metavar="DATASET")
@click.option("--source", required=True, help="The file or http(s) URL to describe.")
@click.option("--title", help="Title of the dataset (default: from the file name).")
@click.option("--format", "fmt", help="Format, when sniffing should not decide "
              "(csv, xlsx, html, pdf, json, ...).")
@click.option("--key", help="Comma-separated key columns (default: a unique column, "
              "else the whole row).")
@click.option("--force", is_flag=True, help="Replace an existing catalog entry.")
@click.option("--dry-run", is_flag=True, help="Print the catalog entry; write nothing.")
def add(dataset_id: str, source: str, title: str | None, fmt: str | None, key: str | None,
        force: bool, dry_run: bool) -> None:
    """Describe a new source, write its catalog entry, ingest it and serve it.

    The format is sniffed, the header found, column types inferred from every value and
    a record key proposed; the entry is written to the catalog folder with comments to
    review. An existing entry is only replaced with --force.
    """
    from stldata.catalog import CatalogError, TooManyColumns
    from stldata.catalog_writer import add_dataset

    keys = [k.strip() for k in key.split(",") if k.strip()] if key else None
    try:
        added = add_dataset(get_settings(), dataset_id, source, title=title, fmt=fmt,
                            key=keys, force=force, dry_run=dry_run)
    except CatalogError as exc:
        # The entry drafted from a source too wide for PostgreSQL fails the catalog's
        # check before it is written: a problem of the source, named as such.
        wide = exc if isinstance(exc, TooManyColumns) else exc.__cause__
        if not isinstance(wide, TooManyColumns):
            raise
        raise StlDataError(f"{source}: {wide.problem}; nothing was written to the catalog "
                           "nor published") from exc
    if dry_run:
        click.echo(added.toml, nl=False)
        return
    click.echo(f"wrote {added.path}")
    if added.summary is not None:
        click.echo(added.summary.line())
    click.echo(f"served at /api/v1/datasets/{dataset_id}/records (restart a running "
               "`stldata serve` or `stldata up` to pick up the new catalog entry)")


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


def _serve_until_stopped(app: Any, host: str, port: int, name: str = "STL Data API") -> None:
    """Serve on a threaded WSGI server until SIGINT or SIGTERM."""
    from werkzeug.serving import make_server

    from stldata.api.uri_limit import ProblemRequestHandler

    server = make_server(host, port, app, threaded=True,
                         request_handler=ProblemRequestHandler)  # its errors as problem+json

    def stop_serving(signum: int, _frame: object) -> None:
        # shutdown() waits for serve_forever() in this very thread, so call it from another.
        log.info("received %s; stopping", signal.Signals(signum).name)
        threading.Thread(target=server.shutdown, daemon=True).start()

    # Installed explicitly: a shell that starts us in the background ignores SIGINT.
    signal.signal(signal.SIGINT, stop_serving)
    signal.signal(signal.SIGTERM, stop_serving)
    click.echo(f"{name} on http://{host}:{port}/ (Swagger UI at "
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


@main.command("command-serve")
@click.option("--port", type=click.IntRange(1, 65535),
              help="Port (default STLDATA_COMMAND_PORT, 5005).")
@click.option("--host", help="Address (default STLDATA_COMMAND_HOST, 127.0.0.1).")
def command_serve(port: int | None, host: str | None) -> None:
    """Run the command API alone: ingests over HTTP, guarded by API keys.

    Run `stldata project` beside it so that ingested snapshots reach the read API.
    """
    from stldata.command.app import create_command_app

    rt = _runtime()
    _serve_until_stopped(create_command_app(rt), host or rt.settings.command_host,
                         port or rt.settings.command_port, name="STL Data command API")


@main.group()
def keys() -> None:
    """Create, list and revoke API keys of the command API."""


def _key_store() -> Any:
    from stldata.command.keys import KeyStore

    return KeyStore(_runtime().database.engine(pool_size=1))


@keys.command("create")
@click.option("--name", required=True, help="Who or what the key is for.")
@click.option("--scope", "scopes", multiple=True, default=("ingest",), show_default=True,
              type=click.Choice(["ingest", "read"]),
              help="ingest: start ingests and follow them; read: follow them only. Repeat "
                   "for several.")
def keys_create(name: str, scopes: tuple[str, ...]) -> None:
    """Create a key and print it once; only its hash is stored."""
    key, token = _key_store().create(name, list(scopes))
    click.echo(f"created key {key.id} {key.name!r} with scope {', '.join(key.scopes)}; "
               "it is shown only now:", err=True)
    click.echo(token)


@keys.command("list")
def keys_list() -> None:
    """List keys: id, name, scopes, created, last used, revoked (never the key itself)."""
    for key in _key_store().list():
        used = key.last_used_at.isoformat(timespec="seconds") if key.last_used_at else "never"
        revoked = (f"revoked {key.revoked_at.isoformat(timespec='seconds')}"
                   if key.revoked_at else "active")
        click.echo(f"{key.id:>4}  {key.name:24} {','.join(key.scopes):14} stl_{key.prefix}_… "
                   f"created {key.created_at.isoformat(timespec='seconds')}  used {used}  "
                   f"{revoked}")


@keys.command("revoke")
@click.argument("key_id", type=int, metavar="ID")
def keys_revoke(key_id: int) -> None:
    """Revoke a key; requests with it get 403 from then on."""
    key = _key_store().revoke(key_id)
    click.echo(f"revoked key {key.id} {key.name!r}")


@main.command()
@click.option("--port", type=click.IntRange(1, 65535),
              help="Port (default STLDATA_API_PORT, 5001).")
@click.option("--no-ingest", is_flag=True, help="Serve what is stored without ingesting.")
@click.option("--command-port", type=click.IntRange(1, 65535),
              help="Port of the command API (default STLDATA_COMMAND_PORT, 5005).")
def up(port: int | None, no_ingest: bool, command_port: int | None) -> None:
    """Run the whole main job: ingest the catalog, project it, serve the read API and the
    command API (port 5005).

    The projector keeps running beside the API, so later ingests show up. Ctrl-C stops
    everything, the embedded PostgreSQL included.
    """
    from stldata.api.app import create_app

    rt = _runtime()
    if not no_ingest:
        # The ingester logs each summary at INFO; print it only where that line is not
        # shown, so that each summary appears once.
        shown = logging.getLogger("stldata.ingest.ingester").isEnabledFor(logging.INFO)
        failed = _ingest_each(rt, list(rt.catalog), echo_summaries=not shown)
        if failed:
            # What is stored for them is still served; the rest of the catalog is fresh.
            log.warning("not ingested: %s (see the errors above); serving what is stored "
                        "for them", ", ".join(failed))

    from stldata.projection.projector import ProjectorWatch, StaleOffsets

    projector = rt.projector()
    stop = threading.Event()
    try:
        projector.run(until_idle=True)
    except StaleOffsets as exc:
        # Another projector (`stldata add`, say) stored offsets first: it applies those
        # messages, and the projector thread below resumes after them.
        log.warning("%s; another projector took over, resuming from its offsets", exc)
    except TransientError as exc:
        # The read model is in PostgreSQL: a broker that is down must not keep it from
        # being served. The projector thread below retries until the log is back.
        log.warning("cannot catch up with the event log before serving (%s); serving "
                    "what is stored, and the projector keeps trying in the background",
                    exc.message)
    finally:
        projector.close()
    # The watch keeps why the projector thread died, if it does; /health reports it.
    watch = ProjectorWatch()
    background = threading.Thread(target=watch.run, args=(rt.projector,),
                                  kwargs={"stop": stop}, name="projector", daemon=True)
    background.start()
    command_server = _start_command_api(rt, command_port or rt.settings.command_port)

    app = create_app(rt)
    app.extensions["stldata.projector"] = watch
    try:
        _serve_until_stopped(app, rt.settings.api_host, port or rt.settings.api_port)
    finally:
        command_server.shutdown()
        stop.set()
        background.join(timeout=10)
        click.echo("stopped", err=True)


def _start_command_api(rt: Any, port: int) -> Any:
    """Serve the command API from a background thread; the caller shuts it down."""
    from werkzeug.serving import make_server

    from stldata.api.uri_limit import ProblemRequestHandler
    from stldata.command.app import create_command_app

    host = rt.settings.command_host
    server = make_server(host, port, create_command_app(rt), threaded=True,
                         request_handler=ProblemRequestHandler)
    threading.Thread(target=server.serve_forever, name="command-api", daemon=True).start()
    click.echo(f"STL Data command API on http://{host}:{port}/ (Swagger UI at "
               f"http://{host}:{port}/docs)")
    return server


@main.command()
def status() -> None:
    """Show, per dataset, the last committed snapshot and the log lag; then the control
    topic's lag and the dead letters."""
    from stldata.projection.projector import (
        DEAD_LETTER_TOPIC,
        GROUP_ID,
        dead_letter_count,
        log_lag,
    )

    rt = _runtime()
    data = rt.consumer(GROUP_ID)
    control = rt.consumer(GROUP_ID + "-control")
    try:
        with rt.database.connect() as conn:
            rows = conn.execute(
                "SELECT dataset_id, max(id) FILTER (WHERE status = 'committed'), "
                "count(*) FILTER (WHERE status = 'pending') FROM snapshots "
                "GROUP BY dataset_id").fetchall()
            last = {str(r[0]): (r[1], r[2]) for r in rows}
            width = max((len(d.id) for d in rt.catalog), default=0)  # columns line up
            for dataset in rt.catalog:
                # The dataset's own topic: the control topic is shared, and said once below.
                lag = log_lag(conn, data, None, [dataset.topic])
                snap, pending = last.get(dataset.id, (None, 0))
                click.echo(f"{dataset.id:{width}}  last snapshot {snap or '-':>6}  "
                           f"pending {pending}  lag {lag}")
            control_lag = log_lag(conn, data, control, [])
        dead = dead_letter_count(data)
        click.echo(f"control events not yet applied: {control_lag}")
        click.echo(f"dead letters: {dead}" + (
            f" (messages the projector could not apply, with the reason in a header; "
            f"topic {data.topic_name(DEAD_LETTER_TOPIC)})" if dead else ""))
    finally:
        data.close()
        control.close()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
