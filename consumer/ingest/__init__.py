"""Files -> Kafka, exactly once (``eventfleet tail``; docs/ingest.md, docs/design.md "Ingestion").

``files`` knows a file by its identity and follows it through rotation and truncation, ``lines``
turns a line into an Avro record, ``positions`` keeps the tailer's file positions in a compacted
topic, and ``tail`` is the loop that commits records and positions in one Kafka transaction.
"""
