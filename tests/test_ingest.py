"""eventfleet tail without a broker: lines -> records (coercion by the schema), file identity,
following real files (partial lines, cut characters, truncation, rotation), [ingest] settings.

Expected records are written by fastavro from values written out by hand here, never by the
code under test."""

import io
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_reader, schemaless_writer

from consumer import config
from consumer.errors import ConfigError
from consumer.ingest.files import FINGERPRINT_BYTES, Files, Follower, Position, Truncated, identify
from consumer.ingest.lines import BadLine, Converter, access_log_time

ROOT = Path(__file__).resolve().parents[1]
AD_SCHEMA = json.loads((ROOT / "schemas" / "ad_event.avsc").read_text())
ACCESS_PIPELINE = ROOT / "examples" / "access-log.toml"

EVERY_TYPE = {
    "type": "record",
    "name": "T",
    "fields": [
        {"name": "i", "type": "int"},
        {"name": "l", "type": "long"},
        {"name": "f", "type": "float"},
        {"name": "d", "type": "double"},
        {"name": "b", "type": "boolean"},
        {"name": "s", "type": "string"},
        {"name": "e", "type": {"type": "enum", "name": "Color", "symbols": ["red", "green"]}},
        {"name": "e2", "type": "Color", "default": "green"},
        {"name": "t", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "n", "type": ["null", "long"]},
        {"name": "n2", "type": ["string", "null"], "default": "x"},
        {"name": "by", "type": "bytes", "default": ""},
    ],
}
PLAIN = parse_schema(json.loads(json.dumps(EVERY_TYPE).replace('"logicalType": "timestamp-millis"', '"x": 0')))


def avro(record: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    schemaless_writer(buf, PLAIN, record)
    return buf.getvalue()


BASE = {"i": -5, "l": 2**40, "f": 1.5, "d": 2.25, "b": True, "s": "héllo", "e": "green", "t": 1_800_000_000_123,
        "n": None, "n2": "x", "by": b"", "e2": "green"}  # fmt: skip


def line(**changes: Any) -> bytes:
    values = {k: v for k, v in BASE.items() if k not in ("by", "e2", "n2")}
    values.update(changes)
    return json.dumps({k: v for k, v in values.items() if v is not ...}).encode()


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({}, {}),
        ({"d": 3}, {"d": 3.0}),  # a whole number is a fine double
        ({"f": 7}, {"f": 7.0}),
        ({"t": "2027-01-15T08:00:00.123Z"}, {"t": 1_800_000_000_123}),  # 1,800,000,000 s after the epoch
        ({"t": "2027-01-15T09:00:00.123+01:00"}, {"t": 1_800_000_000_123}),
        ({"n": 12}, {"n": 12}),
        ({"n": ...}, {"n": None}),  # a missing nullable field: null
        ({"n2": None}, {"n2": None}),
        ({"e2": "red"}, {"e2": "red"}),
        ({"extra": [1, 2]}, {}),  # keys the schema does not have are ignored
    ],
)
def test_json_values_are_coerced_by_the_schema(changes: dict[str, Any], expected: dict[str, Any]) -> None:
    value, key = Converter(EVERY_TYPE, key="s").convert(line(**changes))
    assert value == avro({**BASE, **changes, **expected})
    assert key == "héllo".encode()


def test_iso_times_are_exact_milliseconds() -> None:
    # 2027-01-15T08:00:00Z is 1_800_000_000 s after the epoch
    value, _ = Converter(EVERY_TYPE).convert(line(t="2027-01-15T08:00:00.123Z"))
    assert schemaless_reader(io.BytesIO(value), PLAIN, None)["t"] == 1_800_000_000_123  # type: ignore[index,call-overload]
    value, _ = Converter(EVERY_TYPE).convert(line(t="2027-01-15T10:00:00.999+02:00"))
    assert schemaless_reader(io.BytesIO(value), PLAIN, None)["t"] == 1_800_000_000_999  # type: ignore[index,call-overload]


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (line(i=1.5), r"Expected `int`, got `float` - at `\$.i`"),
        (line(i=2**31), r"<= 2147483647 - at `\$.i`"),
        (line(l=2**63), r"at `\$.l`"),
        (line(e="blue"), r"Invalid enum value 'blue' - at `\$.e`"),
        (line(b="yes"), r"Expected `bool`"),
        (line(s=...), r"missing required field `s`"),
        (line(t="2027-01-15T08:00:00"), r"timezone"),
        (line(f=1e300), r"cannot be written in the schema"),
        (b'{"i": 1, "s": "\xff"}', r"Invalid UTF-8"),
        (b"[1, 2]", r"Expected `object`, got `array`"),
        (b"not json", r"malformed"),
        (b"", r"truncated"),
    ],
)
def test_lines_that_do_not_fit_are_bad(raw: bytes, error: str) -> None:
    with pytest.raises(BadLine, match=error):
        Converter(EVERY_TYPE).convert(raw)


def test_the_generated_writer_writes_what_fastavro_writes_for_the_ad_events() -> None:
    schema = dict(AD_SCHEMA)
    plain = parse_schema(json.loads(json.dumps(schema).replace('"logicalType": "timestamp-millis"', '"x": 0')))
    convert = Converter(schema, key="campaign_id").convert
    for n, ts in enumerate((0, 1, 63, 64, 8191, 8192, 2**20, 1_800_000_000_000, -1, -(2**40))):
        record = {"event_id": "é" * n, "ts": ts, "campaign_id": f"c{n}", "ad_id": "a" * 70, "event_type": "click",
                  "user_id": -n * 1000, "country": "DE", "device": "ctv", "price_micros": 2**62 - n}  # fmt: skip
        buf = io.BytesIO()
        schemaless_writer(buf, plain, record)
        assert convert(json.dumps(record).encode()) == (buf.getvalue(), f"c{n}".encode())


def test_keys_are_the_fields_value_as_text() -> None:
    assert Converter(EVERY_TYPE, key="i").convert(line())[1] == b"-5"
    assert Converter(EVERY_TYPE, key="b").convert(line())[1] == b"true"
    assert Converter(EVERY_TYPE, key="e").convert(line())[1] == b"green"
    assert Converter(EVERY_TYPE, key="t").convert(line(t="2027-01-15T08:00:00.123Z"))[1] == b"1800000000123"
    assert Converter(EVERY_TYPE, key="n").convert(line())[1] is None  # null: no key


def test_framed_values_carry_the_registry_header() -> None:
    convert = Converter(EVERY_TYPE, frame=lambda body: b"\x00\x00\x00\x00\x07" + body).convert
    assert convert(line())[0] == b"\x00\x00\x00\x00\x07" + avro(BASE)


def test_complex_fields_are_written_by_fastavro() -> None:
    schema = {"type": "record", "name": "C", "fields": [
        {"name": "tags", "type": {"type": "array", "items": "string"}},
        {"name": "t", "type": {"type": "long", "logicalType": "timestamp-millis"}},
    ]}  # fmt: skip
    plain = parse_schema({**schema, "fields": [schema["fields"][0], {"name": "t", "type": "long"}]})
    buf = io.BytesIO()
    schemaless_writer(buf, plain, {"tags": ["a", "b"], "t": 1_800_000_000_123})
    convert = Converter(schema).convert
    assert convert(b'{"tags": ["a", "b"], "t": "2027-01-15T08:00:00.123Z"}')[0] == buf.getvalue()
    with pytest.raises(BadLine):
        convert(b'{"tags": [1], "t": 1}')


# -- the access log ------------------------------------------------------------------------------


def test_the_documented_pattern_reads_a_combined_access_log() -> None:
    pipeline = config.load(ACCESS_PIPELINE)
    assert pipeline.ingest is not None and pipeline.ingest.format == "regex"
    docs = (ROOT / "docs" / "ingest.md").read_text()
    assert pipeline.ingest.pattern is not None and pipeline.ingest.pattern in docs  # the page shows this very pattern
    convert = Converter(pipeline.schema, "regex", pipeline.ingest.pattern, "remote_addr").convert
    plain = parse_schema(
        json.loads(json.dumps(dict(pipeline.schema)).replace('"logicalType": "timestamp-millis"', '"x": 0'))
    )

    def read(raw: bytes) -> Any:
        value, key = convert(raw)
        return key, schemaless_reader(io.BytesIO(value), plain, None)

    key, r = read(b'127.0.0.1 - frank [10/Oct/2000:13:55:36 -0700] "GET /apache_pb.gif HTTP/1.0" 200 2326 '
                  b'"http://www.example.com/start.html" "Mozilla/4.08 [en] (Win98; I ;Nav)"')  # fmt: skip
    assert key == b"127.0.0.1"
    assert r == {"remote_addr": "127.0.0.1", "remote_user": "frank", "time": 971211336000, "method": "GET",
                 "path": "/apache_pb.gif", "protocol": "HTTP/1.0", "status": 200, "bytes": 2326,
                 "referer": "http://www.example.com/start.html",
                 "user_agent": "Mozilla/4.08 [en] (Win98; I ;Nav)"}  # fmt: skip
    _, r = read(b'10.0.0.2 - - [01/Dec/2026:13:00:00 +0100] "HEAD /x?a=1 HTTP/1.1" 304 - "-" "curl/8 \\"q\\""\r')
    assert (r["time"], r["bytes"], r["referer"], r["user_agent"], r["remote_user"]) == (
        1796126400000, 0, None, 'curl/8 \\"q\\"', None)  # fmt: skip
    _, r = read(b'10.0.0.3 - - [01/Dec/2026:13:00:00 +0000] "GET / HTTP/1.1" 500 12')  # common log format
    assert (r["status"], r["bytes"], r["user_agent"]) == (500, 12, None)
    for bad in (b"garbage", b'1.2.3.4 - - [01/Dec/2026:13:00:00 +0000] "GET / HTTP/1.1" 2000 1', b"\xff\xfe"):
        with pytest.raises(BadLine):
            convert(bad)


def test_access_log_times() -> None:
    assert access_log_time("10/Oct/2000:13:55:36 -0700").isoformat() == "2000-10-10T13:55:36-07:00"  # type: ignore[union-attr]
    assert access_log_time("01/Dec/2026:13:00:00.250 +0000").isoformat() == "2026-12-01T13:00:00.250000+00:00"  # type: ignore[union-attr]
    assert access_log_time("1800000000000") == "1800000000000"  # left to the struct


# -- files ----------------------------------------------------------------------------------------


def follower(path: Path, max_line: int = 1 << 20) -> Follower:
    fd = os.open(path, os.O_RDONLY)
    return Follower(str(path), fd, identify(fd), 0, max_line)


def test_a_partial_last_line_waits_for_its_newline(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    path.write_bytes(b'{"a": 1}\n{"a": ')
    f = follower(path)
    chunk = f.read()
    assert chunk is not None and chunk.lines == [b'{"a": 1}'] and chunk.start == 0
    assert f.line_pos == 9 and f.read() is None
    with open(path, "ab") as w:
        w.write(b"2}\n\n")
    chunk = f.read()
    assert chunk is not None and chunk.lines == [b'{"a": 2}', b""] and chunk.start == 9
    assert f.line_pos == path.stat().st_size


def test_a_multibyte_character_cut_by_a_read_is_whole_in_its_line(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    text = "naïve → ok\n".encode()
    path.write_bytes(text * 3)
    f = follower(path)
    lines = []
    while (chunk := f.read(limit=3)) is not None:  # 3-byte reads cut every multi-byte character
        lines += chunk.lines
    assert lines == [text[:-1]] * 3


def test_an_overlong_line_is_handed_out_as_its_head_alone(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    path.write_bytes(b"ok\n" + b"x" * 50 + b"\nafter\n")
    f = follower(path, max_line=10)
    got = []
    while (chunk := f.read(limit=7)) is not None:
        got += [(chunk.start, line) for line in chunk.lines]
    assert got == [(0, b"ok"), (3, b"x" * 11), (54, b"after")]
    assert f.line_pos == path.stat().st_size


def test_truncation_is_seen_when_the_file_shrinks_or_its_first_bytes_change(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    path.write_bytes(b"first line\n")
    f = follower(path)
    assert f.read() is not None
    with open(path, "r+b") as w:  # truncated and written past the old position before the next read
        w.truncate(0)
        w.write(b"other text, longer\n")
    with pytest.raises(Truncated):
        f.read()
    f.restart()
    chunk = f.read()
    assert chunk is not None and chunk.lines == [b"other text, longer"]
    with open(path, "r+b") as w:
        w.truncate(3)
    with pytest.raises(Truncated):
        f.read()


def test_the_fingerprint_grows_with_the_file_up_to_its_limit(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    path.write_bytes(b"x\n")
    f = follower(path)
    assert f.identity.fp_len == 2
    path.write_bytes(b"x\n" + b"y" * 3000 + b"\n")  # same inode, same first bytes, more of them
    f.read()
    assert f.identity.fp_len == FINGERPRINT_BYTES
    assert f.identity.ino == path.stat().st_ino


def files(tmp_path: Path, known: dict[str, Position], pattern: str = "*.log*", at_end: bool = False) -> Files:
    return Files([str(tmp_path / pattern)], known, start_at_end=at_end, max_line_bytes=1 << 20, rotate_wait_s=0)


def committed(f: Follower) -> Position:
    return Position(f.identity, f.path, f.line_pos, 1)


def read_partly(tmp_path: Path, content: bytes, limit: int, pattern: str = "*.log*") -> tuple[Path, Position]:
    """app.log holding ``content``, read up to ``limit`` bytes by a tailer that then stops: the
    file and the position it committed."""
    live = tmp_path / "app.log"
    live.write_bytes(content)
    first = files(tmp_path, {}, pattern=pattern)
    (f,) = first.scan()
    f.read(limit=limit)
    pos = committed(f)
    first.close()
    return live, pos


def restarted(tmp_path: Path, pos: Position, pattern: str = "*.log*") -> Files:
    """The files of a tailer started again with ``pos`` committed."""
    return files(tmp_path, {pos.identity.key(): pos}, pattern=pattern)


def test_files_are_known_by_identity_not_by_name(tmp_path: Path) -> None:
    live, pos = read_partly(tmp_path, b"a\nb\n" * 600, 1000)
    live.rename(tmp_path / "app.log.1")  # rotated by rename while the tailer was down
    live.write_bytes(b"new\n")
    again = restarted(tmp_path, pos)
    opened = {Path(g.path).name: g for g in again.scan()}
    assert opened["app.log.1"].line_pos == pos.offset  # the renamed file, read on from its position
    assert opened["app.log"].line_pos == 0  # the new one from its start
    assert next(again.reading_order()).path.endswith("app.log.1")  # the old file first


def test_a_renamed_file_out_of_the_glob_is_found_again_at_start(tmp_path: Path) -> None:
    live, pos = read_partly(tmp_path, b"line\n" * 300, 100, pattern="app.log")
    live.rename(tmp_path / "app.log.1")
    live.write_bytes(b"")
    again = restarted(tmp_path, pos, pattern="app.log")
    again.scan()
    (found,) = again.recover()
    assert found.path.endswith("app.log.1") and found.line_pos == pos.offset and found.gone


def test_a_copy_of_a_file_read_is_read_on_from_its_position_and_a_reused_inode_from_the_start(tmp_path: Path) -> None:
    live, pos = read_partly(tmp_path, b"0123456789\n" * 200, 550)
    (tmp_path / "app.log.1").write_bytes(live.read_bytes())  # copytruncate's copy: another inode
    live.write_bytes(b"fresh content\n")  # the same inode, other first bytes
    again = restarted(tmp_path, pos)
    opened = {Path(g.path).name: g for g in again.scan()}
    assert opened["app.log.1"].line_pos == pos.offset
    assert opened["app.log"].line_pos == 0


def test_a_copy_outside_the_glob_is_found_in_the_folder_of_a_truncated_file(tmp_path: Path) -> None:
    live, pos = read_partly(tmp_path, b"0123456789\n" * 200, 550, pattern="app.log")
    (tmp_path / "app.log.1").write_bytes(live.read_bytes())  # copytruncate's copy, which the glob misses
    live.write_bytes(b"fresh content\n")
    (tmp_path / "other.log").write_bytes(b"unrelated\n" * 300)  # never opened: other first bytes
    again = restarted(tmp_path, pos, pattern="app.log")
    assert [g.line_pos for g in again.scan()] == [0]
    (copy,) = again.recover()
    assert copy.path.endswith("app.log.1") and copy.line_pos == pos.offset and copy.gone


def test_a_copy_of_a_file_still_open_waits_until_that_file_ends(tmp_path: Path) -> None:
    live = tmp_path / "app.log"
    live.write_bytes(b"0123456789\n" * 200)
    tailer = files(tmp_path, {})
    assert len(tailer.scan()) == 1
    (tmp_path / "app.log.1").write_bytes(live.read_bytes())
    assert tailer.scan() == []  # the copy is not read while the original holds the same content


def test_start_at_end_starts_after_the_last_complete_line(tmp_path: Path) -> None:
    (tmp_path / "app.log").write_bytes(b"old 1\nold 2\npartial")
    (f,) = files(tmp_path, {}, at_end=True).scan()
    assert f.line_pos == len(b"old 1\nold 2\n")


# -- [ingest] settings --------------------------------------------------------------------------------


def pipeline_text(ingest: str) -> str:
    return (
        f'[kafka]\nbootstrap_servers = "k:9092"\ntopics = ["ad-events"]\ngroup_id = "g"\n'
        f'[schema]\npath = "{ROOT / "schemas" / "ad_event.avsc"}"\n[window]\nsize = "1m"\n'
        f'[aggregate.metrics]\nevents = "count"\n[sink]\ntype = "sqlite"\npath = "x.db"\ntable = "t"\n'
        f"[ingest]\n{ingest}\n"
    )


def test_ingest_defaults(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text(pipeline_text('paths = "logs/*.log"'))
    s = config.load(path).ingest
    assert s is not None
    assert s.paths == (str(tmp_path / "logs" / "*.log"),)
    assert (s.topic, s.format, s.start, s.key, s.positions_topic) == (
        "ad-events", "jsonl", "beginning", None, "ad-events.tail-positions")  # fmt: skip
    assert re.fullmatch(r"[\w.-]+-[0-9a-f]{8}", s.id)  # host and config path
    assert (s.commit_interval_ms, s.rotate_wait_ms, s.max_line_bytes) == (1000, 5000, 512 << 10)


@pytest.mark.parametrize(
    ("ingest", "key", "fix"),
    [
        ("", "ingest.paths", "paths = "),
        ('paths = ["a"]\nformat = "csv"', "ingest.format", '"jsonl" or "regex"'),
        ('paths = ["a"]\nformat = "regex"', "ingest.pattern", "is missing"),
        ('paths = ["a"]\nformat = "regex"\npattern = "(?P<nope>x)"', "ingest.pattern", "not a field"),
        ('paths = ["a"]\nformat = "regex"\npattern = "(?P<event_id>x)"', "ingest.pattern", "required field 'ts'"),
        ('paths = ["a"]\nformat = "regex"\npattern = "(?P<event_id"', "ingest.pattern", "not a valid regular"),
        ('paths = ["a"]\npattern = "x"', "ingest.pattern", 'format = "regex" only'),
        ('paths = ["a"]\nkey = "nope"', "ingest.key", "not a field"),
        ('paths = ["a"]\nstart = "middle"', "ingest.start", '"beginning" or "end"'),
        ('paths = ["a"]\nid = "a b"', "ingest.id", "plain name"),
        ('paths = ["a"]\npositions_topic = "ad-events"', "ingest.positions_topic", "topic of events"),
        ('paths = ["a"]\ncommit_interval = "0s"', "ingest.commit_interval", "more than zero"),
        ('paths = ["a"]\nmax_line_bytes = "big"', "ingest.max_line_bytes", "not a size"),
        ('paths = ["a"]\nmetrics_port = 70000', "ingest.metrics_port", "port number"),
        ('paths = ["a"]\nfollow = true', "ingest.follow", "unknown key"),
        ('paths = ["a"]\n[ingest.config]\n"transactional.id" = "x"', "ingest.config.transactional.id", "managed"),
    ],
)
def test_ingest_mistakes_name_the_key_and_the_fix(tmp_path: Path, ingest: str, key: str, fix: str) -> None:
    path = tmp_path / "p.toml"
    path.write_text(pipeline_text(ingest))
    with pytest.raises(ConfigError) as e:
        config.load(path)
    assert e.value.key == key and fix in str(e.value) and "\n" not in str(e.value)


def test_tail_without_an_ingest_section_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from consumer import commands

    path = tmp_path / "p.toml"
    path.write_text(pipeline_text('paths = ["a"]').split("[ingest]")[0])
    assert commands.main(["tail", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("eventfleet: config error at 'ingest': section is missing") and err.count("\n") == 1


def test_tail_with_its_metrics_port_taken_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    from consumer import commands

    path = tmp_path / "p.toml"
    path.write_text(pipeline_text('paths = ["a"]'))
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert commands.main(["tail", "--config", str(path), "--metrics-port", str(port)]) == 2
    err = capsys.readouterr().err
    assert f"cannot serve /metrics on port {port}" in err and "--metrics-port" in err and err.count("\n") == 1
