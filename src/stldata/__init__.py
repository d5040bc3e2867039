"""STL Data API: public data about St. Louis, cleaned once and served through a REST API.

The package follows the flow of data: ``ingest`` (command side: fetch, decode, clean and
publish), ``log`` (the event log between the two sides), ``projection`` (query side: apply
events to the read model), ``store`` (PostgreSQL, embedded or external) and ``api`` (the
Flask read service).
"""

__version__ = "0.1.0"
