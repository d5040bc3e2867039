"""API keys of the command API: created once, shown once, stored hashed.

A token is ``stl_<prefix>_<secret>``: the prefix is public and finds the row, the secret
is 256 random bits and only its SHA-256 is stored. A slow password hash is unnecessary
for a token of that entropy, and the stored hash is compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from stldata.errors import StlDataError

#: What a key may do. ``ingest`` starts ingests and reads their progress; ``read`` only
#: reads progress.
SCOPES = ("ingest", "read")
TOKEN = re.compile(r"stl_([0-9a-f]{12})_([A-Za-z0-9_-]{43})")


class ApiKeyError(StlDataError):
    """A key command cannot be carried out (unknown id, bad scope, empty name)."""


@dataclass(frozen=True)
class ApiKey:
    id: int
    name: str
    prefix: str
    scopes: tuple[str, ...]
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    def allows(self, scope: str) -> bool:
        # A key that may start ingests may also follow them.
        return scope in self.scopes or (scope == "read" and "ingest" in self.scopes)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _key(row: Any) -> ApiKey:
    return ApiKey(int(row.id), str(row.name), str(row.prefix), tuple(row.scopes),
                  row.created_at, row.last_used_at, row.revoked_at)


_COLUMNS = "id, name, prefix, scopes, created_at, last_used_at, revoked_at"


class KeyStore:
    """The ``api_keys`` table."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    def create(self, name: str, scopes: list[str]) -> tuple[ApiKey, str]:
        """Store a new key; return it with its token, which is never stored or shown again."""
        if not name.strip():
            raise ApiKeyError("a key needs a non-empty --name")
        unknown = sorted(set(scopes) - set(SCOPES))
        if unknown or not scopes:
            raise ApiKeyError(f"scope must be one of {', '.join(SCOPES)}, not "
                            f"{', '.join(unknown) or 'nothing'}")
        prefix = secrets.token_hex(6)
        token = f"stl_{prefix}_{secrets.token_urlsafe(32)}"
        with self.engine.begin() as conn:
            row = conn.execute(sa.text(
                "INSERT INTO api_keys (name, prefix, token_sha256, scopes) "
                f"VALUES (:n, :p, :h, :s) RETURNING {_COLUMNS}"),
                {"n": name.strip(), "p": prefix, "h": _digest(token),
                 "s": sorted(set(scopes))}).one()
        return _key(row), token

    def list(self) -> list[ApiKey]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.text(f"SELECT {_COLUMNS} FROM api_keys ORDER BY id")).all()
        return [_key(r) for r in rows]

    def revoke(self, key_id: int) -> ApiKey:
        with self.engine.begin() as conn:
            row = conn.execute(sa.text(
                "UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) "
                f"WHERE id = :i RETURNING {_COLUMNS}"), {"i": key_id}).first()
        if row is None:
            raise ApiKeyError(f"no API key with id {key_id}; see `stldata keys list`")
        return _key(row)

    def lookup(self, token: str) -> ApiKey | None:
        """The key a token belongs to, revoked or not; None when the token is not one."""
        match = TOKEN.fullmatch(token)
        if match is None:
            return None
        with self.engine.connect() as conn:
            row = conn.execute(sa.text(
                f"SELECT {_COLUMNS}, token_sha256 FROM api_keys WHERE prefix = :p"),
                {"p": match.group(1)}).first()
        if row is None or not hmac.compare_digest(_digest(token), str(row.token_sha256)):
            return None
        return _key(row)

    def touch(self, key: ApiKey) -> None:
        """Record that a key was used; at most once a minute, to spare writes."""
        with self.engine.begin() as conn:
            conn.execute(sa.text(
                "UPDATE api_keys SET last_used_at = now() WHERE id = :i AND "
                "(last_used_at IS NULL OR last_used_at < now() - interval '1 minute')"),
                {"i": key.id})


def presented_token(headers: Any) -> str | None:
    """The token a request carries in ``Authorization: Bearer`` or ``X-API-Key``."""
    authorization = str(headers.get("Authorization", "")).strip()
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.casefold() == "bearer" and value.strip():
            return value.strip()
    api_key = str(headers.get("X-API-Key", "")).strip()
    return api_key or None
