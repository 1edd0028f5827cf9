"""eventfleet tail against real files, a real broker and a real tailer process: each complete line
in the topic exactly once (read with read_committed) through partial writes, rotations, truncation,
deletion and SIGKILLs, and the workers' aggregates of that topic equal to ground truth computed
here from the lines written."""

import io
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_reader

from .conftest import SCHEMA_PATH, Kafka, Pipeline, assert_exact, ground_truth, read_to_end, wait_for

pytestmark = pytest.mark.integration

PLAIN = parse_schema(json.loads(SCHEMA_PATH.read_text().replace('"logicalType": "timestamp-millis"', '"x": 0')))
START_MS = 1_800_000_000_000


def event(n: int) -> dict[str, Any]:
    """Line number n as an ad event: its number in event_id, time 1 ms a line (nothing is late)."""
    rng = random.Random(n)
    return {"event_id": f"n{n}", "ts": START_MS + n, "campaign_id": f"c{n % 13}", "ad_id": f"a{n % 3}",
            "event_type": rng.choice(["impression", "impression", "click", "conversion"]), "user_id": n,
            "country": "DE", "device": "mobile", "price_micros": rng.randrange(5_000_000)}  # fmt: skip


def jline(n: int) -> bytes:
    return json.dumps(event(n)).encode() + b"\n"


def jlines(start: int, stop: int) -> bytes:
    """The lines numbered start to stop - 1."""
    return b"".join(jline(n) for n in range(start, stop))


class Tail:
    """``eventfleet tail`` processes of one pipeline file, logging to tail-N.log."""

    def __init__(self, p: Pipeline) -> None:
        self.p = p
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, metrics_port: int = 0, fault: str | None = None) -> subprocess.Popen[bytes]:
        log = open(self.p.workdir / f"tail-{len(self.procs)}.log", "wb")  # noqa: SIM115
        cmd = [sys.executable, "-m", "consumer", "tail", "--config", str(self.p.path), "--metrics-port",
               str(metrics_port)]  # fmt: skip
        env = {k: v for k, v in os.environ.items() if k != "EVENTFLEET_FAULT"}
        if fault:
            env["EVENTFLEET_FAULT"] = fault
        proc = subprocess.Popen(cmd, stdout=log, stderr=log, env=env)
        self.procs.append(proc)
        self.p.procs.append(proc)  # killed by the pipeline fixture at the end
        return proc

    def start_on(self, live: Path, lines: int) -> None:
        """``live`` holding the lines numbered 0 to lines - 1, the tailer started on it, and all
        of them in the topic."""
        write(live, jlines(0, lines))
        self.start()
        wait_for_numbers(self.p, self, lines)

    def kill(self) -> None:
        proc = self.procs[-1]
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)

    def stop(self) -> int:
        proc = self.procs[-1]
        proc.send_signal(signal.SIGTERM)
        return proc.wait(60)

    def assert_once(self, expected: range | list[int]) -> None:
        """The topic holds each line numbered in ``expected`` exactly once (waiting for them)."""
        assert_once(wait_for_numbers(self.p, self, len(expected)), expected, self)

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.p.workdir.glob("tail-*.log")))


def tail_pipeline(
    pipeline: Any,
    logs: Path,
    glob: str = "app.log*",
    ingest: str = "",
    partitions: int = 2,
    extra: str = "",
    schema: str = "",
) -> Pipeline:
    """A pipeline whose [ingest] follows ``logs``/``glob``."""
    lines = [f'id = "t-{os.getpid()}-{random.randrange(10**9)}"', 'commit_interval = "200ms"', 'rotate_wait = "2s"',
             'key = "campaign_id"', f'paths = ["{logs}/{glob}"]']  # fmt: skip
    sections = "[ingest]\n" + "\n".join([*lines, ingest]) + "\n" + extra
    return pipeline(partitions, sections=sections, schema=schema)  # type: ignore[no-any-return]


def tailed(pipeline: Any, tmp_path: Path, **options: Any) -> tuple[Path, Pipeline, Tail]:
    """A folder of logs (``tmp_path``/logs), a pipeline tailing it (``options``: of
    tail_pipeline) and its tailer, not started yet."""
    logs = tmp_path / "logs"
    logs.mkdir()
    p = tail_pipeline(pipeline, logs, **options)
    return logs, p, Tail(p)


def read_topic(bootstrap: str, topic: str) -> list[Any]:
    """Every message of the topic from its start to its end as a read_committed consumer sees it."""
    return read_to_end(bootstrap, topic, timeout_s=60)


def records(bootstrap: str, topic: str) -> list[dict[str, Any]]:
    out = []
    for m in read_topic(bootstrap, topic):
        r = schemaless_reader(io.BytesIO(m.value()), PLAIN, None)
        assert isinstance(r, dict)
        assert m.key() == r["campaign_id"].encode()  # keyed by [ingest] key
        out.append(r)
    return out


def record_ends(kafka: Kafka, topic: str, messages: list[Any]) -> dict[int, int]:
    """Where the workers end on each partition: after its last record of ``messages`` (the high
    watermark is one further, past the marker of the last transaction, which a consumer never
    receives)."""
    ends = {q: 0 for q in kafka.ends(topic)}
    for m in messages:
        ends[m.partition()] = max(ends[m.partition()], m.offset() + 1)
    return ends


def numbers(bootstrap: str, topic: str) -> list[int]:
    return [int(r["event_id"][1:]) for r in records(bootstrap, topic)]


def wait_for_numbers(p: Pipeline, tail: Tail, expected: int, timeout_s: float = 90) -> list[int]:
    """The line numbers in the topic once it holds ``expected`` of them (or fail)."""
    deadline = time.monotonic() + timeout_s
    while True:
        got = numbers(p.bootstrap, p.topic)
        if len(got) >= expected or time.monotonic() > deadline:
            return got
        time.sleep(0.3)


def assert_once(got: list[int], expected: range | list[int], tail: Tail) -> None:
    counts = Counter(got)
    twice = sorted(n for n, c in counts.items() if c > 1)
    missing = sorted(set(expected) - set(counts))
    extra = sorted(set(counts) - set(expected))
    assert not twice and not missing and not extra, (
        f"{len(twice)} twice (e.g. {twice[:5]}), {len(missing)} missing (e.g. {missing[:5]}), {len(extra)} extra"
        f"\n{tail.logs()[-4000:]}"
    )


# -- the whole story ---------------------------------------------------------------------------------

WRITER = r'''
import json, os, random, shutil, sys, time
sys.path.insert(0, sys.argv[4])
from tests.integration.test_tail import jline
folder, total, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(seed)
live = os.path.join(folder, "app.log")
renames = sorted(rng.sample(range(total // 10, total - total // 10), 5))
copytruncate = rng.choice([n for n in range(total // 10, total - total // 10) if all(abs(n - r) > 50 for r in renames)])

def shift():
    """logrotate's numbering: app.log.N -> app.log.N+1, oldest first."""
    old = sorted((int(n.rsplit(".", 1)[1]) for n in os.listdir(folder) if n.startswith("app.log.")), reverse=True)
    for k in old:
        os.rename(f"{live}.{k}", f"{live}.{k + 1}")

fd = os.open(live, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
for n in range(total):
    if n in renames:  # rotation by rename: the old file keeps its inode, a new app.log
        os.close(fd)
        shift()
        os.rename(live, live + ".1")
        fd = os.open(live, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        print("renamed at", n, flush=True)
    if n == copytruncate:  # copytruncate, the writer paused around it
        time.sleep(0.2)
        shift()
        shutil.copyfile(live, live + ".1")
        os.truncate(live, 0)
        print("copytruncated at", n, flush=True)
        time.sleep(0.2)
    data = jline(n)
    if n % 40 == 0:  # a partial write: half a line, a pause, the rest
        cut = rng.randrange(1, len(data))
        os.write(fd, data[:cut])
        time.sleep(rng.uniform(0.005, 0.05))
        os.write(fd, data[cut:])
    else:
        os.write(fd, data)
    if n % 200 == 199:
        time.sleep(0.02)
os.close(fd)
print("done", flush=True)
'''


def test_numbered_lines_through_rotations_and_sigkills_exactly_once_to_the_aggregates(
    pipeline: Any, kafka: Kafka, tmp_path: Path
) -> None:
    total = 24_000
    logs, p, tail = tailed(pipeline, tmp_path)
    tail.start()
    writer_log = open(tmp_path / "writer.log", "wb")  # noqa: SIM115
    root = str(Path(__file__).resolve().parents[2])
    seed = int(os.environ.get("EVENTFLEET_TEST_SEED", "7"))  # another seed: other rotation points and kill instants
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(logs), str(total), str(seed), root],
                              stdout=writer_log, stderr=writer_log)  # fmt: skip
    rng = random.Random(seed)
    for _ in range(3):  # SIGKILL the tailer at an arbitrary instant, three times, while the writer writes
        time.sleep(rng.uniform(1.5, 4.0))
        tail.kill()
        time.sleep(rng.uniform(0.0, 1.0))
        tail.start()
    assert writer.wait(300) == 0, (tmp_path / "writer.log").read_text()
    writer_log.close()
    story = (tmp_path / "writer.log").read_text()
    assert story.count("renamed at") == 5 and story.count("copytruncated at") == 1, story
    got = wait_for_numbers(p, tail, total)
    assert_once(got, range(total), tail)
    assert tail.stop() == 0
    assert_once(numbers(p.bootstrap, p.topic), range(total), tail)  # nothing more after the SIGTERM commit

    # file -> Kafka -> workers -> sink: the aggregates equal ground truth from the lines written
    truth = ground_truth([(0, event(n)) for n in range(total)])
    assert truth.late == 0  # time advances 1 ms a line: lateness does not depend on the order read
    p.start_worker()
    p.start_worker()
    ends = record_ends(kafka, p.topic, read_topic(p.bootstrap, p.topic))
    p.wait_caught_up(ends)
    assert_exact(p, truth, ends)


def test_a_sigkill_inside_the_transaction_commits_nothing_of_it(pipeline: Any, tmp_path: Path) -> None:
    logs, p, tail = tailed(pipeline, tmp_path, partitions=1)
    live = logs / "app.log"
    write(live, jlines(0, 100))
    proc = tail.start(fault="in_tail_transaction@2")  # records and positions sent, the commit not yet
    wait_for_numbers(p, tail, 100)
    write(live, jlines(100, 200))
    assert proc.wait(60) == -signal.SIGKILL
    assert numbers(p.bootstrap, p.topic) == list(range(100))  # the killed transaction is not visible
    tail.start()
    tail.assert_once(range(200))
    assert tail.stop() == 0


# -- files as they really behave ------------------------------------------------------------------------


def write(path: Path, data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)


def copytruncate(live: Path, copy: Path) -> None:
    """What logrotate's copytruncate does: a copy of the file, then the file truncated."""
    shutil.copyfile(live, copy)
    os.truncate(live, 0)


def test_a_partial_last_line_is_held_until_its_newline(pipeline: Any, tmp_path: Path) -> None:
    logs, p, tail = tailed(pipeline, tmp_path)
    write(logs / "app.log", jline(0) + jline(1)[:30])
    tail.start()
    assert wait_for_numbers(p, tail, 1) == [0]
    time.sleep(1.0)  # several commit intervals: the half line stays out
    assert numbers(p.bootstrap, p.topic) == [0]
    tail.kill()  # the half line is not committed, the position is after line 0
    tail.start()
    write(logs / "app.log", jline(1)[30:])
    tail.assert_once(range(2))
    assert tail.stop() == 0


def test_a_multibyte_character_cut_by_a_write_and_a_read(pipeline: Any, tmp_path: Path) -> None:
    logs, p, tail = tailed(pipeline, tmp_path, partitions=1)
    tail.start()
    record = {**event(0), "country": "Österreich → ∑"}
    data = json.dumps(record, ensure_ascii=False).encode() + b"\n"
    cut = data.index("→".encode()) + 1  # inside the three bytes of →
    write(logs / "app.log", data[:cut])
    time.sleep(1.0)  # the tailer reads the first part, cut inside the character
    write(logs / "app.log", data[cut:])
    wait_for(lambda: len(records(p.bootstrap, p.topic)) == 1, 30, "the line")
    assert records(p.bootstrap, p.topic)[0]["country"] == "Österreich → ∑"
    assert tail.stop() == 0


@pytest.mark.parametrize("glob", ["app.log*", "app.log"])
def test_rotation_by_rename_reads_the_old_file_to_its_end_then_the_new_one(
    pipeline: Any, tmp_path: Path, glob: str
) -> None:
    logs, p, tail = tailed(pipeline, tmp_path, glob=glob, partitions=1)
    tail.start()
    live = logs / "app.log"
    w = open(live, "ab", buffering=0)  # noqa: SIM115
    w.write(jlines(0, 100))
    wait_for_numbers(p, tail, 100)
    live.rename(logs / "app.log.1")
    w.write(jlines(100, 200))  # the writer's last lines, into the renamed file
    write(live, jlines(200, 300))
    w.close()
    got = wait_for_numbers(p, tail, 300)
    assert_once(got, range(300), tail)
    assert got == sorted(got)  # one partition: the old file's lines before the new file's
    assert tail.stop() == 0


def test_rotation_across_a_restart_with_a_glob_naming_only_the_live_file(pipeline: Any, tmp_path: Path) -> None:
    logs, _, tail = tailed(pipeline, tmp_path, glob="app.log")
    live = logs / "app.log"
    tail.start_on(live, 100)
    tail.kill()
    write(live, jlines(100, 150))  # unread when the file is renamed
    live.rename(logs / "app.log.1")
    write(live, jlines(150, 200))
    tail.start()  # app.log.1 is outside the glob: found again by its identity
    tail.assert_once(range(200))
    assert "(renamed), reading on" in tail.logs()
    assert tail.stop() == 0


def test_copytruncate_reads_the_file_again_and_never_its_copy_twice(pipeline: Any, tmp_path: Path) -> None:
    logs, p, tail = tailed(pipeline, tmp_path)  # the glob app.log* matches the copy app.log.1
    live = logs / "app.log"
    tail.start_on(live, 100)
    write(live, jlines(100, 150))
    tail.kill()  # 100-149 may be unread when the copy is taken: they are read from the copy
    copytruncate(live, logs / "app.log.1")
    write(live, jlines(150, 180))
    tail.start()
    time.sleep(1.5)
    write(live, jlines(180, 200))
    tail.assert_once(range(200))
    # while running: the copy is taken and the file truncated under the tailer's eyes
    copytruncate(live, logs / "app.log.2")
    write(live, jlines(200, 260))
    tail.assert_once(range(260))
    time.sleep(1.5)  # scans and commits later: still once
    assert_once(numbers(p.bootstrap, p.topic), range(260), tail)
    assert "truncated or replaced" in tail.logs() and "(a copy)" in tail.logs()
    assert tail.stop() == 0


def test_copytruncate_with_the_glob_naming_only_the_live_file(pipeline: Any, tmp_path: Path) -> None:
    logs, _, tail = tailed(pipeline, tmp_path, glob="app.log")
    live = logs / "app.log"
    tail.start_on(live, 300)
    copytruncate(live, logs / "app.log.1")
    write(live, jlines(300, 310))  # shorter than before: shrunk below the position
    tail.assert_once(range(310))
    tail.kill()
    write(live, jlines(310, 350))  # unread when the next copy is taken
    copytruncate(live, logs / "app.log.2")
    write(live, jlines(350, 360))
    tail.start()  # the copy is outside the glob: found in the folder by its first bytes, read from the position
    tail.assert_once(range(360))
    assert "(a copy), reading on" in tail.logs()
    assert tail.stop() == 0


def test_an_inode_reused_by_a_new_file_is_read_from_its_start(pipeline: Any, tmp_path: Path) -> None:
    logs, _, tail = tailed(pipeline, tmp_path)
    live = logs / "app.log"
    tail.start_on(live, 200)
    assert tail.stop() == 0
    inode = live.stat().st_ino
    live.unlink()
    reused = None
    for i in range(200):  # file systems hand a freed inode to the next file, usually at once
        candidate = logs / f"new-{i}"
        candidate.touch()
        if candidate.stat().st_ino == inode:
            reused = candidate
            break
    if reused is None:  # same inode, other content: what a reused inode looks like to the tailer
        pytest.skip("this file system did not reuse the inode")
    reused.write_bytes(jlines(200, 210))
    reused.rename(live)
    for extra in logs.glob("new-*"):
        extra.unlink()
    assert live.stat().st_ino == inode
    tail.start()
    tail.assert_once(range(210))
    assert tail.stop() == 0


def test_a_file_deleted_while_open_is_read_to_its_end(pipeline: Any, tmp_path: Path) -> None:
    logs, p, tail = tailed(pipeline, tmp_path)
    live = logs / "app.log"
    w = open(live, "ab", buffering=0)  # noqa: SIM115
    w.write(jlines(0, 50))
    tail.start()
    wait_for_numbers(p, tail, 50)
    live.unlink()
    w.write(jlines(50, 120))  # written after the deletion, read all the same
    w.close()
    tail.assert_once(range(120))
    wait_for(lambda: "renamed away or deleted" in tail.logs(), 30, "the deleted file closed")
    assert tail.stop() == 0


def test_many_files_at_once(pipeline: Any, tmp_path: Path) -> None:
    logs, _, tail = tailed(pipeline, tmp_path, glob="*.log")
    tail.start()
    files = 40
    for round_ in range(5):  # written in rounds, new files appearing while others grow
        for i in range(files):
            n0 = (i * 5 + round_) * 20
            write(logs / f"app-{i:02d}.log", jlines(n0, n0 + 20))
        time.sleep(0.3)
    tail.assert_once(range(files * 100))
    assert tail.stop() == 0


def test_a_full_producer_queue_makes_reading_wait(pipeline: Any, tmp_path: Path) -> None:
    queue = '[ingest.config]\n"queue.buffering.max.messages" = 50\n"linger.ms" = 50\n'
    logs, _, tail = tailed(pipeline, tmp_path, extra=queue)  # a queue of 50 records: reading waits for deliveries
    write(logs / "app.log", jlines(0, 5000))
    tail.start()
    tail.assert_once(range(5000))
    assert tail.stop() == 0


def test_bad_lines_go_to_the_dead_letters_with_their_origin(pipeline: Any, tmp_path: Path) -> None:
    logs, p, tail = tailed(pipeline, tmp_path)
    live = logs / "app.log"
    bad = [b"not json", b'{"event_id": "x"}', json.dumps({**event(5), "user_id": "many"}).encode(),
           b'{"event_id": "\xff"}']  # fmt: skip
    data = jline(0) + bad[0] + b"\n" + jline(1) + b"\n   \n" + bad[1] + b"\n" + bad[2] + b"\n" + bad[3] + b"\n"
    write(live, data)
    tail.start()
    tail.assert_once(range(2))
    wait_for(lambda: len(read_topic(p.bootstrap, f"{p.topic}.dlq")) == 4, 30, "four dead letters")
    letters = read_topic(p.bootstrap, f"{p.topic}.dlq")
    assert sorted(m.value() for m in letters) == sorted(bad)
    for m in letters:
        headers = dict(m.headers())
        assert headers["eventfleet.source.file"] == str(live).encode()
        offset = int(headers["eventfleet.source.offset"])
        assert data[offset:].startswith(m.value() + b"\n") and (offset == 0 or data[offset - 1 : offset] == b"\n")
        assert headers["eventfleet.error"]
    errors = {m.value(): dict(m.headers())["eventfleet.error"].decode() for m in letters}
    assert "user_id" in errors[bad[2]] and "UTF-8" in errors[bad[3]]
    assert tail.stop() == 0
    assert "2 lines produced, 4 rejected" in tail.logs()


def test_an_overlong_line_is_a_dead_letter_and_the_next_lines_go_on(pipeline: Any, tmp_path: Path) -> None:
    logs, p, tail = tailed(pipeline, tmp_path, ingest='max_line_bytes = "64KiB"')
    tail.start()
    live = logs / "app.log"
    long = json.dumps({**event(1), "country": "x" * 300_000}).encode()
    with open(live, "ab", buffering=0) as w:
        w.write(jline(0) + long[:100_000])  # the tailer holds 64 KiB of it at most, then skips
        time.sleep(1.0)
        w.write(long[100_000:] + b"\n" + jline(2))
    tail.assert_once([0, 2])
    wait_for(lambda: len(read_topic(p.bootstrap, f"{p.topic}.dlq")) == 1, 30, "the dead letter")
    (letter,) = read_topic(p.bootstrap, f"{p.topic}.dlq")
    assert letter.value() == long[: 64 << 10]
    assert dict(letter.headers())["eventfleet.source.offset"] == str(len(jline(0))).encode()
    assert b"max_line_bytes" in dict(letter.headers())["eventfleet.error"]
    assert tail.stop() == 0


def test_too_many_bad_lines_in_a_row_stop_the_tailer(pipeline: Any, tmp_path: Path) -> None:
    logs, _, tail = tailed(pipeline, tmp_path, extra="[dlq]\nmax_consecutive = 3\n")
    write(logs / "app.log", jline(0) + b"bad\n" * 4)
    proc = tail.start()
    assert proc.wait(60) == 2
    assert "4 invalid lines in a row in" in tail.logs() and "dlq.max_consecutive = 3" in tail.logs()
    assert "Traceback" not in tail.logs()


def test_start_at_end_skips_what_the_files_held_at_the_first_start(pipeline: Any, tmp_path: Path) -> None:
    logs, _, tail = tailed(pipeline, tmp_path, ingest='start = "end"')
    write(logs / "app.log", jlines(0, 100) + jline(100)[:20])
    tail.start()
    wait_for(lambda: "tailing" in tail.logs(), 60, "the tailer to start")
    time.sleep(1.0)
    write(logs / "app.log", jline(100)[20:] + jlines(101, 150))
    tail.kill()  # restarts continue from the positions, and a later file is read from its start
    tail.start()
    write(logs / "app.log.1", jlines(150, 170))
    # the line being written at the first start is read whole once complete, never half
    tail.assert_once(range(100, 170))
    assert tail.stop() == 0


def test_sigterm_commits_and_the_metrics_count(pipeline: Any, tmp_path: Path) -> None:
    logs, p, tail = tailed(pipeline, tmp_path)
    write(logs / "app.log", jlines(0, 500) + b"\nbad\n" + jline(500)[:10])
    with socket.socket() as probe:  # a free port
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    tail.start(metrics_port=port)
    wait_for_numbers(p, tail, 500)

    def get(path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
                return r.status, r.read().decode()
        except OSError:
            return 0, ""

    wait_for(lambda: get("/readyz")[0] == 200, 30, "/readyz")
    assert get("/healthz")[0] == 200
    wait_for(lambda: "eventfleet_tail_lines_rejected_total 1.0" in get("/metrics")[1], 30, "the metrics")
    text = get("/metrics")[1]
    assert "eventfleet_tail_lines_produced_total 500.0" in text
    assert "eventfleet_tail_lines_empty_total 1.0" in text
    assert f'eventfleet_tail_bytes_behind{{file="{logs}/app.log"}} 10.0' in text  # the partial line
    assert "eventfleet_tail_files_open 1.0" in text
    assert 'eventfleet_tail_transactions_total{outcome="committed"}' in text
    assert tail.stop() == 0
    assert_once(numbers(p.bootstrap, p.topic), range(500), tail)


def test_a_second_tailer_with_the_same_id_fences_the_first(pipeline: Any, tmp_path: Path) -> None:
    logs, p, tail = tailed(pipeline, tmp_path)
    first = tail.start()
    wait_for(lambda: "tailing" in tail.logs(), 60, "the first tailer")
    tail.start()
    wait_for(lambda: "tailing" in (p.workdir / "tail-1.log").read_text(), 60, "the second tailer")
    write(logs / "app.log", jlines(0, 50))  # the first one's next transaction fails
    assert first.wait(60) == 2
    assert "fenced this one" in (p.workdir / "tail-0.log").read_text()
    tail.assert_once(range(50))
    assert tail.stop() == 0


def test_lines_framed_for_a_schema_registry_aggregate_exactly(
    pipeline: Any, kafka: Kafka, tmp_path: Path, registry_url: str
) -> None:
    """With [schema] registry the tailer registers the schema and frames each record: what
    confluent-kafka's AvroDeserializer reads, and what the workers aggregate exactly."""
    from confluent_kafka.schema_registry import SchemaRegistryClient
    from confluent_kafka.schema_registry.avro import AvroDeserializer
    from confluent_kafka.serialization import MessageField, SerializationContext

    logs, p, tail = tailed(pipeline, tmp_path, schema=f'registry = "{registry_url}"')
    write(logs / "app.log", jlines(0, 3000))
    tail.start()
    deadline = time.monotonic() + 90
    while len(messages := read_topic(p.bootstrap, p.topic)) < 3000:
        assert time.monotonic() < deadline, tail.logs()[-3000:]
        time.sleep(0.2)
    assert tail.stop() == 0
    deserialize = AvroDeserializer(SchemaRegistryClient({"url": registry_url, "timeout": 10}))
    ctx = SerializationContext(p.topic, MessageField.VALUE)
    got = sorted((deserialize(m.value(), ctx) for m in messages), key=lambda r: int(r["event_id"][1:]))
    assert all(m.value()[0] == 0 for m in messages)  # the registry's magic byte, then the schema id
    assert [r["event_id"] for r in got] == [f"n{n}" for n in range(3000)]
    assert got[7]["price_micros"] == event(7)["price_micros"]
    p.start_worker()
    ends = record_ends(kafka, p.topic, messages)
    p.wait_caught_up(ends)
    assert p.stop_all() == [0]
    assert_exact(p, ground_truth([(0, event(n)) for n in range(3000)]), ends)
