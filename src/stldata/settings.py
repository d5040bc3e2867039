"""Settings, each declared once with its type, default and a one-line description.

Values come from the environment (prefix ``STLDATA_``) or from a ``.env`` file in the
working directory. ``README.md`` lists every setting; a test keeps that list complete.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: The repository root when running from a checkout; the bundled catalog lives there.
PROJECT_ROOT = Path(__file__).resolve().parents[2]


_BOOTSTRAP_SERVER = re.compile(r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):(?P<port>\d{1,5})")
_TOPIC_PREFIX = re.compile(r"[A-Za-z0-9._-]{0,100}")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="STLDATA_", env_file=".env", extra="ignore", frozen=True
    )

    home: Path = Field(
        Path("var"), description="State directory: embedded PostgreSQL data, Kafka data, logs."
    )
    database_url: str | None = Field(
        None,
        description="postgresql:// URL of an existing server; unset starts the embedded one.",
    )
    embedded_shared_buffers: str = Field(
        "auto", pattern=r"^(auto|[1-9][0-9]*(kB|MB|GB))$",
        description="shared_buffers of the embedded PostgreSQL, e.g. `512MB`; `auto` is a "
        "quarter of the machine's memory, at most 2GB (PostgreSQL's own default, 128MB, "
        "rereads a large dataset from the OS on every search). Applied when the server "
        "starts.",
    )
    catalog_dir: Path = Field(
        PROJECT_ROOT / "catalog", description="Folder of dataset catalog files (*.toml)."
    )
    kafka_bootstrap: str | None = Field(
        None, description="Kafka bootstrap servers; unset uses the embedded log in PostgreSQL."
    )
    kafka_topic_prefix: str = Field(
        "", description="Prefix of every Kafka topic and consumer group (a namespace on a "
        "shared cluster)."
    )
    kafka_replication_factor: int = Field(
        1, ge=1, description="Replicas of each Kafka topic the log creates (3 in production)."
    )
    kafka_flush_timeout: float = Field(
        120.0, ge=1, le=86400, allow_inf_nan=False,
        description="Seconds a Kafka flush waits for every message before failing (1 to 86400)."
    )
    topic_partitions: int = Field(
        3, ge=1, description="Partitions of each dataset topic when the log creates it."
    )
    api_host: str = Field("127.0.0.1", description="Address the read API listens on.")
    api_port: int = Field(5001, ge=1, le=65535, description="Port the read API listens on.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="Logging level: DEBUG, INFO, WARNING, ERROR."
    )
    batch_size: int = Field(
        5000, ge=1, description="Records per batch when publishing and projecting."
    )
    poll_interval: float = Field(
        0.5, gt=0, description="Seconds the projector waits when the log has nothing new."
    )
    validator_cache_seconds: float = Field(
        10.0, ge=0, le=86400, allow_inf_nan=False,
        description="Longest time an API process reuses the snapshot state behind "
        "its ETag and Last-Modified headers; a commit's notification drops it at once. 0 "
        "reads it on every request (for a read replica, or a pooler that does not pass LISTEN "
        "through).",
    )
    fetch_timeout: float = Field(30.0, gt=0, description="Seconds before an HTTP fetch fails.")
    max_source_bytes: int = Field(
        2_000_000_000, gt=0, description="Largest source file the ingester will fetch or read."
    )
    zip_max_total_bytes: int = Field(
        4_000_000_000, gt=0, description="Most bytes the chosen members of one ZIP archive may "
        "inflate to, together."
    )
    zip_max_ratio: float = Field(
        200.0, gt=1, description="Highest compression ratio of a ZIP member over 1 MiB "
        "(inflated size / compressed size)."
    )
    zip_max_members: int = Field(
        10_000, ge=1, description="Most entries a ZIP archive may have."
    )
    command_host: str = Field("127.0.0.1", description="Address the command API listens on.")
    command_port: int = Field(
        5005, ge=1, le=65535, description="Port the command API listens on."
    )
    command_workers: int = Field(
        2, ge=1, description="Ingests the command API runs at the same time (background "
        "threads); more wait queued."
    )
    command_max_upload_bytes: int = Field(
        200_000_000, gt=0, description="Largest request body (an uploaded source file) the "
        "command API accepts; larger is a 413 problem."
    )
    command_source_dir: Path | None = Field(
        None, description="Folder whose files and subfolders the command API may ingest as a "
        "local `source`; unset refuses every local path."
    )
    command_source_urls: str = Field(
        "", description="Comma-separated http(s) URL prefixes the command API may fetch as a "
        "`source`; empty refuses every URL."
    )
    rate_limit: str = Field(
        "600/minute", description="Requests per client (API key, else address) to the read "
        "API, e.g. `600/minute` or `10/second;600/minute`; empty turns limits off."
    )
    command_rate_limit: str = Field(
        "120/minute", description="Requests per client (API key, else address) to the command "
        "API; same form as STLDATA_RATE_LIMIT."
    )
    rate_limit_storage_uri: str = Field(
        "memory://", description="Where rate-limit counters live: `memory://` (per process) "
        "or a shared store such as `redis://host:6379`."
    )

    @field_validator("rate_limit", "command_rate_limit")
    @classmethod
    def _parse_rate_limit(cls, value: str) -> str:
        if value.strip():
            from limits import parse_many

            parse_many(value)  # raises ValueError naming what it cannot read
        return value.strip()

    @field_validator("kafka_bootstrap")
    @classmethod
    def _check_bootstrap(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None  # empty is unset: the embedded log
        for server in value.split(","):
            match = _BOOTSTRAP_SERVER.fullmatch(server.strip())
            if not match or not 1 <= int(match["port"]) <= 65535:
                raise ValueError(f"{server.strip()!r} is not host:port (port 1 to 65535); "
                                 "list several servers separated by commas")
        return value.strip()

    @field_validator("kafka_topic_prefix")
    @classmethod
    def _check_topic_prefix(cls, value: str) -> str:
        # Kafka's own rule for topic names, with room left for the names it prefixes.
        if not _TOPIC_PREFIX.fullmatch(value):
            raise ValueError(f"{value!r} may hold only ASCII letters, digits, '.', '_' and "
                             "'-', at most 100 of them")
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @property
    def state_dir(self) -> Path:
        return self.home.resolve()


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
