"""eventfleet: exact windowed aggregations over Kafka Avro topics.

Follow one event through the stages in order: ``source`` (Kafka batches and rebalances),
``decode`` (Avro bytes to field values), ``window`` (event time to window, lateness),
``aggregate`` (metrics and their merge rules), ``state`` (partials since the last flush),
``flush`` (sink transaction, then Kafka commit), all tied together by ``worker``.
"""

__version__ = "0.1.0"
