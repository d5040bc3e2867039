"""The event log between the command side and the query side.

The interface follows Kafka's model (topics, partitions, keys, headers, offsets) so that
the embedded backend, durable in PostgreSQL, and the Kafka backend are interchangeable.
"""
