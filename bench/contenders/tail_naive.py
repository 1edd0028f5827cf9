"""naive tail: readline, json.loads, fastavro, produce. What a careful engineer writes in 40 lines.

No guarantees: no positions are kept (a restart reads the file again from its start), the
producer's queue is lost on a crash, rotation is not followed. It holds back a partial last line
until its newline arrives (a tailer that did not would be wrong, not naive). Runs until SIGTERM,
then flushes the producer and exits.
"""

import argparse
import io
import json
import signal
import time

from confluent_kafka import Producer
from fastavro import parse_schema, schemaless_writer

p = argparse.ArgumentParser()
for a in ("--bootstrap", "--topic", "--file", "--schema", "--key"):
    p.add_argument(a, required=True)
args = p.parse_args()

with open(args.schema) as f:
    schema = parse_schema(json.load(f))
producer = Producer({"bootstrap.servers": args.bootstrap, "linger.ms": 20})
stop = False


def _stop(signum: int, frame: object) -> None:
    global stop
    stop = True


signal.signal(signal.SIGTERM, _stop)
key = args.key
with open(args.file, "rb") as f:
    while not stop:
        start = f.tell()
        line = f.readline()
        if not line.endswith(b"\n"):  # end of the file, or half a line: wait for the rest
            f.seek(start)
            producer.poll(0.05)
            time.sleep(0.05)
            continue
        record = json.loads(line)
        buf = io.BytesIO()
        schemaless_writer(buf, schema, record)
        while True:
            try:
                producer.produce(args.topic, buf.getvalue(), key=record[key].encode())
                break
            except BufferError:  # the local queue is full: wait for deliveries
                producer.poll(0.1)
        producer.poll(0)
producer.flush(60)
