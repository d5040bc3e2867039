"""Query side: apply log events to the read model in PostgreSQL."""
