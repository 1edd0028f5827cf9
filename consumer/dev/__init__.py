"""Local development services: Apache Kafka (``kafka``), PostgreSQL (``postgres``), a schema
registry (``registry``), and what they share about their processes (``process``).

Imported by their commands (``eventfleet kafka|postgres|registry``), the demo, the tests and the
benchmark; never by the engine, so ``eventfleet run`` and ``eventfleet worker`` load none of it.
"""
