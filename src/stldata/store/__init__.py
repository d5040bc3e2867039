"""PostgreSQL: the embedded server, connections, and the migrated schema."""
