"""raw: a bare confluent-kafka batch-consume loop that touches each message value (the client's limit)."""

import argparse
import time

from common import BATCH, consumer, write_result

p = argparse.ArgumentParser()
for a in ("--bootstrap", "--topic", "--group", "--out"):
    p.add_argument(a, required=True)
p.add_argument("--events", type=int, required=True)
args = p.parse_args()

c = consumer(args.bootstrap, args.topic, args.group)
n, size, first = 0, 0, 0.0
while n < args.events:
    msgs = c.consume(BATCH, 1.0)
    if msgs and not first:
        first = time.time()
    for m in msgs:
        size += len(m.value())
    n += len(msgs)
write_result(args.out, first, n, bytes=size)
c.close()
