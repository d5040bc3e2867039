"""Pinned types of ``auto`` columns: inferred once by the ingester, read by every side.

A type is pinned the first time a column is seen and never changes afterwards, so the
typed table, the API's filters and later snapshots all agree; a later value that does
not fit is quarantined like any other.
"""

from __future__ import annotations

from dataclasses import replace

from stldata.catalog import Dataset
from stldata.store.database import Conn


def pinned_types(conn: Conn, dataset_id: str) -> dict[str, str]:
    rows = conn.execute("SELECT column_name, type FROM column_types WHERE dataset_id = %s",
                        (dataset_id,)).fetchall()
    return {str(name): str(type_) for name, type_ in rows}


def pin_types(conn: Conn, dataset_id: str, types: dict[str, str], snapshot_id: int) -> None:
    for name, type_ in types.items():
        conn.execute("INSERT INTO column_types (dataset_id, column_name, type, snapshot_id) "
                     "VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
                     (dataset_id, name, type_, snapshot_id))


def with_types(dataset: Dataset, pinned: dict[str, str]) -> Dataset:
    """The dataset with its auto columns typed; an auto column not yet pinned is left out,
    since no table or filter can know its type before the first ingest."""
    if not any(c.type == "auto" for c in dataset.columns):
        return dataset
    columns = tuple(
        replace(c, type=pinned[c.name]) if c.type == "auto" else c  # type: ignore[arg-type]
        for c in dataset.columns if c.type != "auto" or c.name in pinned)
    return replace(dataset, columns=columns)


def resolve(conn: Conn, dataset: Dataset) -> Dataset:
    if not any(c.type == "auto" for c in dataset.columns):
        return dataset
    return with_types(dataset, pinned_types(conn, dataset.id))
