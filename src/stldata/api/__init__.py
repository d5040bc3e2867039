"""Read service: the Flask REST API over the read model."""
