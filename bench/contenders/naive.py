"""naive: the raw loop + fastavro schemaless decode + a dict aggregation of the example pipeline.

What a careful engineer writes in 40 lines: no lateness, no offsets, no guarantees.
"""

import argparse
import io
import json
import time

from common import BATCH, consumer, write_result
from fastavro import parse_schema, schemaless_reader

p = argparse.ArgumentParser()
for a in ("--bootstrap", "--topic", "--group", "--out", "--schema"):
    p.add_argument(a, required=True)
p.add_argument("--events", type=int, required=True)
args = p.parse_args()

with open(args.schema) as f:
    schema = json.load(f)
for field in schema["fields"]:
    if isinstance(field["type"], dict) and field["type"].get("logicalType") == "timestamp-millis":
        field["type"] = "long"  # epoch ms as an int
parsed = parse_schema(schema)

c = consumer(args.bootstrap, args.topic, args.group)
agg: dict[tuple, list[int]] = {}
n, first = 0, 0.0
BytesIO = io.BytesIO
while n < args.events:
    msgs = c.consume(BATCH, 1.0)
    if msgs and not first:
        first = time.time()
    for m in msgs:
        r = schemaless_reader(BytesIO(m.value()), parsed, None)
        ts, price = r["ts"], r["price_micros"]
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
