"""naive-registry: the naive loop on framed values, decoded by confluent-kafka's AvroDeserializer.

The raw loop + ``confluent_kafka.schema_registry.avro.AvroDeserializer`` (writer schema fetched
by id from the registry and cached by its client, then fastavro's schemaless_reader) + the same
dict aggregation as naive.py. The deserializer is called without a SerializationContext: that is
its fastest use (about 12 us a value here, against about 16 us with the context of the docs'
example, which makes it resolve the subject and run the rule machinery for every value), and
without a subject it never asks the registry for ``/associations``. The client has a request
timeout (it has none by default). The writer schema's ``timestamp-millis`` makes fastavro return
``ts`` as a datetime: turned back into epoch ms exactly, with integer timedelta arithmetic.
"""

import argparse
import datetime
import time

from common import BATCH, consumer, write_result
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer

p = argparse.ArgumentParser()
for a in ("--bootstrap", "--topic", "--group", "--out", "--registry"):
    p.add_argument(a, required=True)
p.add_argument("--events", type=int, required=True)
args = p.parse_args()

client = SchemaRegistryClient({"url": args.registry, "timeout": 10})
deserialize = AvroDeserializer(client)
EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
MS = datetime.timedelta(milliseconds=1)

c = consumer(args.bootstrap, args.topic, args.group)
agg: dict[tuple, list[int]] = {}
n, first = 0, 0.0
while n < args.events:
    msgs = c.consume(BATCH, 1.0)
    if msgs and not first:
        first = time.time()
    for m in msgs:
        r = deserialize(m.value())
        ts, price = (r["ts"] - EPOCH) // MS, r["price_micros"]
        key = (ts - ts % 60_000, r["campaign_id"], r["event_type"])
        a = agg.get(key)
        if a is None:
            agg[key] = [1, price, price, price]
        else:
            a[0] += 1
            a[1] += price
            if price < a[2]:
                a[2] = price
            if price > a[3]:
                a[3] = price
    n += len(msgs)
rows = [[*k, *v] for k, v in agg.items()]
write_result(args.out, first, n, rows=rows)
c.close()
