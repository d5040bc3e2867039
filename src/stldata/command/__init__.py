"""The command API: a write service that starts ingests over HTTP, guarded by API keys."""
