"""The decode alone: the schemaless projection against the framed decoder, per value, in one process.

    python bench/framed_decode.py [--values 200000] [--registry-port 8081]

Encodes the benchmark's events (bench/run.py's seed, times and second writer version) schemaless
and framed for the local registry (started for the run when none answers on the port, stopped
after), then times ``decode`` over them: best of 5 passes of process CPU time, per value. Framed:
one writer version (the example schema), the second version only (a field moved, one added), and
the two interleaved as bench/run.py writes them. Prints the function FramedDecoder generates for
the two versions. No Kafka: the difference is the header dispatch and the data, nothing else.
"""

import argparse
import gc
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.run import MAX_DELAY_MS, PLACEMENTS, START_MS, write_pipeline, writer_v2  # noqa: E402
from consumer import config  # noqa: E402
from consumer.decode import FramedDecoder, make_encoder, make_projection, projection_body  # noqa: E402
from consumer.dev import registry as devregistry  # noqa: E402
from consumer.produce import events, framed_encoder  # noqa: E402
from consumer.registry import connect  # noqa: E402


def per_value_us(decode: Callable[[bytes], Any], values: list[bytes], passes: int = 5) -> float:
    best = float("inf")
    for _ in range(passes):
        started = time.process_time()
        for v in values:
            decode(v)
        best = min(best, time.process_time() - started)
    return best / len(values) * 1e6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--values", type=int, default=200_000)
    ap.add_argument("--registry-port", type=int, default=devregistry.DEFAULT_PORT)
    args = ap.parse_args()
    registry = devregistry.Registry(ROOT / devregistry.default_home(args.registry_port), args.registry_port)
    started = not registry.answers()
    if started:
        registry.up()
    try:
        run(args.values, registry.url)
    finally:
        if started:
            registry.down()
    return 0


def run(count: int, url: str) -> None:
    topic = f"framed-decode-{time.strftime('%Y%m%d-%H%M%S')}"  # a subject of its own
    pipeline = config.load(write_pipeline(Path(tempfile.mkdtemp()), "127.0.0.1:9092", topic, "g", registry=url))
    assert pipeline.registry is not None
    fields = pipeline.event_fields()
    v1 = dict(pipeline.schema)
    v2 = writer_v2(v1)
    framed = [framed_encoder(pipeline.registry, pipeline.registry.subject_for(topic), w) for w in (v1, v2)]
    stream = events(pipeline, 7, START_MS, 2000.0, 0.02, MAX_DELAY_MS)
    records = [next(stream) for _ in range(count)]
    for i, r in enumerate(records):
        r["placement"] = PLACEMENTS[i % 3]  # the first version leaves it out
    plain = make_encoder(v1)
    schemaless = [plain(r) for r in records]
    data = {
        "framed, one writer version": [framed[0](r) for r in records],
        "framed, the second version only": [framed[1](r) for r in records],
        "framed, two versions interleaved": [framed[i % 2](r) for i, r in enumerate(records)],
    }
    projection = make_projection(v1, fields)
    expected = [projection(v) for v in schemaless[:1000]]
    gc.freeze()
    base = per_value_us(projection, schemaless)
    print(f"{'schemaless projection':34s} {base:.3f} us a value")
    decoder = None
    for name, values in data.items():
        decoder = FramedDecoder(v1, fields, connect(pipeline.registry))
        assert [decoder.decode(v) for v in values[:1000]] == expected  # also fetches the writer schemas
        us = per_value_us(decoder.decode, values)
        print(f"{name:34s} {us:.3f} us a value (+{us - base:.3f} us, {us / base:.2f}x)")
    assert decoder is not None
    print("\nthe function FramedDecoder generates for the two versions (as its _generate writes it):\n")
    lines = ["def decode(value):", "    fo = BytesIO(value)", f"    header = fo.read({decoder.size})"]
    for n, (header, writer) in enumerate(decoder.inline):
        body, _ = projection_body(writer, fields, v1, tag=f"w{n}_")
        lines += [f"    if header == H{n}:  # {header!r}", *(f"        {line}" for line in body)]
    print("\n".join([*lines, "    return miss(value)"]))


if __name__ == "__main__":
    raise SystemExit(main())
