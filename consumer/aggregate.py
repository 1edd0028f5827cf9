"""Metric functions and their merge rules.

A partial aggregate is a list with one value per metric, in the pipeline's metric order. Every
metric has a fold (add one event) and a merge (combine two partials) that is associative and
commutative, so partials from different partitions, flushes and workers can be merged in any
order, in memory or in the sink, with the same result.

Sketch metrics (``distinct``, ``quantiles``) hold an Apache DataSketches object in their slot of
the partial: an HLL sketch, a KLL sketch. Their merge is the library's union/merge, their stored
form is the library's serialized bytes (:func:`sketch_to_bytes`), and what a user reads are their
estimates, in the columns :func:`estimate_columns` names (docs/metrics.md).
"""

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

KINDS = ("count", "sum", "min", "max", "distinct", "quantiles")
"""Metric kinds: ``count`` takes no field, the others take one field (``sum:price``)."""
SKETCH_KINDS = ("distinct", "quantiles")
"""Kinds whose partial is a sketch: estimates to show, bytes to store (docs/metrics.md)."""

DEFAULT_LG_K = 12  # distinct: 2^12 HLL buckets, about 1.6% relative standard error
LG_K_RANGE = (4, 21)  # what DataSketches' HLL accepts
DEFAULT_QUANTILES = (0.5, 0.95, 0.99)
DEFAULT_KLL_K = 200  # quantiles: about 1.65% normalized rank error (99% confidence)
KLL_K_RANGE = (8, 65535)  # what DataSketches' KLL accepts
OPTIONS = {"distinct": ("lg_k",), "quantiles": ("quantiles", "k")}
"""The inline-table keys each kind takes besides ``kind`` and ``field``."""

Partial = list[Any]


@functools.cache
def datasketches() -> Any:
    """Apache DataSketches, imported on first use: it loads numpy (about 0.1 s of start-up and a
    pool of threads, measured as 9% more CPU per event by the benchmark), which pipelines without
    sketches do not pay for."""
    import datasketches as ds

    return ds


def hll_type() -> Any:
    """One byte per HLL bucket: the fastest to update and to union."""
    return datasketches().tgt_hll_type.HLL_8


Key = tuple[Any, ...]
State = dict[Key, Partial]
Updater = Callable[[State, Any, Any], None]
Fold = Callable[..., int]
"""``fold(state, t, record, watermark, partition[, floor]) -> late (event, window) pairs``: hopping
windows (:func:`compile_fold`)."""


class MetricError(ValueError):
    """A metric spec is wrong; ``option`` is the inline-table key at fault (None: the whole spec),
    ``fix`` what to write instead when the message does not say it."""

    def __init__(self, message: str, option: str | None = None, fix: str = "") -> None:
        super().__init__(message)
        self.option = option
        self.fix = fix


@dataclass(frozen=True)
class Metric:
    """One metric of the pipeline: ``name = "kind:field"`` or an inline table in the pipeline file.

    ``lg_k`` applies to ``distinct``, ``quantiles`` and ``k`` to ``quantiles``; other kinds keep
    the defaults.
    """

    name: str
    kind: str
    field: str | None = None
    lg_k: int = DEFAULT_LG_K
    quantiles: tuple[float, ...] = DEFAULT_QUANTILES
    k: int = DEFAULT_KLL_K

    @classmethod
    def parse(cls, name: str, spec: Any) -> "Metric":
        """Parse ``"count"``, ``"sum:price_micros"``, ``"distinct:user_id"``, or an inline table
        ``{ kind = "quantiles", field = "latency_ms", quantiles = [0.5, 0.99] }``.

        Raises MetricError saying what is accepted.
        """
        if isinstance(spec, Mapping):
            return cls._parse_table(name, spec)
        if not isinstance(spec, str):
            spec = repr(spec)
        kind, colon, field = (part.strip() for part in spec.partition(":"))
        accepted = 'write "count", or "KIND:FIELD" with KIND one of sum, min, max, distinct, quantiles'
        if kind not in KINDS:
            raise MetricError(f"unknown metric {spec!r}; {accepted}")
        if kind == "count":
            if colon:
                raise MetricError(f"'count' takes no field (got {spec!r}); write \"count\"")
            return cls(name, kind)
        if not field:
            raise MetricError(f"'{kind}' needs a field; write \"{kind}:FIELD\"")
        return cls(name, kind, field)

    @classmethod
    def _parse_table(cls, name: str, spec: Mapping[str, Any]) -> "Metric":
        kind = spec.get("kind")
        if kind not in KINDS:
            raise MetricError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}", "kind",
                              'write e.g. { kind = "distinct", field = "user_id" }')  # fmt: skip
        allowed = ("kind", "field", *OPTIONS.get(kind, ()))
        for option in spec:
            if option not in allowed:
                raise MetricError(f"unknown key {option!r} for a {kind} metric", option, f"use {', '.join(allowed)}")
        field = spec.get("field")
        if kind == "count":
            if field is not None:
                raise MetricError("'count' takes no field", "field", "remove it")
            return cls(name, kind)
        if not isinstance(field, str) or not field.strip():
            raise MetricError(f"a {kind} metric needs a field", "field", 'write field = "FIELD"')
        options: dict[str, Any] = {}
        if "lg_k" in spec:
            lg_k = spec["lg_k"]
            low, high = LG_K_RANGE
            if not isinstance(lg_k, int) or isinstance(lg_k, bool) or not low <= lg_k <= high:
                raise MetricError(f"must be a whole number from {low} to {high}, got {lg_k!r}", "lg_k",
                                  f"write e.g. lg_k = {DEFAULT_LG_K} (the default: about 1.6% error; each +1 "
                                  "divides it by 1.41)")  # fmt: skip
            options["lg_k"] = lg_k
        if "k" in spec:
            k = spec["k"]
            low, high = KLL_K_RANGE
            if not isinstance(k, int) or isinstance(k, bool) or not low <= k <= high:
                raise MetricError(f"must be a whole number from {low} to {high}, got {k!r}", "k",
                                  f"write e.g. k = {DEFAULT_KLL_K} (the default: about 1.65% rank error)")  # fmt: skip
            options["k"] = k
        if "quantiles" in spec:
            options["quantiles"] = _quantiles(spec["quantiles"])
        return cls(name, kind, field.strip(), **options)


def _quantiles(value: Any) -> tuple[float, ...]:
    fix = "write e.g. quantiles = [0.5, 0.95, 0.99] (each strictly between 0 and 1)"
    if not isinstance(value, list) or not value:
        raise MetricError(f"must be a non-empty list of numbers, got {value!r}", "quantiles", fix)
    out: list[float] = []
    for q in value:
        if not isinstance(q, int | float) or isinstance(q, bool) or not 0 < q < 1:
            raise MetricError(f"{q!r} is not a quantile", "quantiles", fix)
        if float(q) in out:
            raise MetricError(f"{q!r} is listed twice", "quantiles", "name each quantile once")
        out.append(float(q))
    return tuple(out)


# -- what a metric shows, and its stored form -------------------------------------------------


def quantile_suffix(q: float) -> str:
    """``0.5 -> "p50"``, ``0.99 -> "p99"``, ``0.999 -> "p99_9"``: 100 x q, "_" for the point."""
    percent = (Decimal(repr(q)) * 100).normalize()
    return "p" + f"{percent:f}".replace(".", "_")


def estimate_columns(metric: Metric) -> tuple[str, ...]:
    """The output columns of a metric, in order: its name, or for quantiles ``<name>_p<100 x q>``
    per quantile (``latency_p50``, ``latency_p99_9``). The sinks, ``eventfleet results`` and the
    kafka sink's records all name them by this one function."""
    if metric.kind == "quantiles":
        return tuple(f"{metric.name}_{quantile_suffix(q)}" for q in metric.quantiles)
    return (metric.name,)


def sketch_column(metric: Metric) -> str:
    """The column (or record field) that keeps a sketch metric's serialized sketch."""
    return f"{metric.name}_sketch"


def estimates(metric: Metric, value: Any) -> tuple[Any, ...]:
    """The values of :func:`estimate_columns` for a partial's slot: the value itself for count,
    sum, min and max; the HLL estimate rounded to a whole number for distinct; for quantiles the
    KLL quantiles by nearest rank (the smallest value seen with at least ``q`` of the values at or
    below it, as a float), None for an empty sketch."""
    if metric.kind == "distinct":
        return (round(value.get_estimate()),)
    if metric.kind == "quantiles":
        if value.is_empty():
            return (None,) * len(metric.quantiles)
        return tuple(value.get_quantiles(list(metric.quantiles), inclusive=True))
    return (value,)


def stored_values(metrics: Sequence[Metric], partial: Partial) -> tuple[Any, ...]:
    """A partial as the sinks store it, in the order of ``Pipeline.column_types``: each metric's
    :func:`estimates`, and after a sketch metric's estimates its :func:`sketch_to_bytes`."""
    out: list[Any] = []
    for m, v in zip(metrics, partial, strict=True):
        if m.kind in SKETCH_KINDS:
            out += estimates(m, v)
            out.append(sketch_to_bytes(m, v))
        else:
            out.append(v)
    return tuple(out)


def sketch_to_bytes(metric: Metric, sketch: Any) -> bytes:
    """A sketch's stored form: DataSketches' compact serialization (readable by its Java, C++ and
    Python libraries, and by Druid, Pinot... that use them)."""
    if metric.kind == "distinct":
        data: bytes = sketch.serialize_compact()
    else:
        data = sketch.serialize()
    return data


def sketch_from_bytes(metric: Metric, data: bytes) -> Any:
    """The sketch :func:`sketch_to_bytes` wrote, ready to merge or update."""
    if metric.kind == "distinct":
        return datasketches().hll_sketch.deserialize(data)
    return datasketches().kll_doubles_sketch.deserialize(data)


def new_sketch(metric: Metric) -> Any:
    """An empty sketch of the metric (the identity of its merge)."""
    if metric.kind == "distinct":
        return datasketches().hll_sketch(metric.lg_k, hll_type())
    return datasketches().kll_doubles_sketch(metric.k)


@dataclass(frozen=True)
class MergeRule:
    """How two partials of one metric combine: in Python, and in SQL (``{a}`` the stored value,
    ``{b}`` the new one, ``{least}``/``{greatest}`` the dialect's two-argument min and max)."""

    python: Callable[[Any, Any], Any]
    sql: str


MERGE_RULES: dict[str, MergeRule] = {
    "count": MergeRule(lambda x, y: x + y, "{a} + {b}"),
    "sum": MergeRule(lambda x, y: x + y, "{a} + {b}"),
    "min": MergeRule(min, "{least}({a}, {b})"),
    "max": MergeRule(max, "{greatest}({a}, {b})"),
}
"""The one home of the merge rules: :func:`merge` applies them in memory, the SQL sinks generate
their upsert from them (consumer/sinks/sql.py)."""


def merge(metrics: Sequence[Metric], a: Partial, b: Partial) -> Partial:
    """Combine two partials of the same key (the rule the sinks apply in SQL too).

    Sketches are merged into new ones: ``a`` and ``b`` are left as they were.
    """
    return [
        merge_sketches(m, x, y) if m.kind in SKETCH_KINDS else MERGE_RULES[m.kind].python(x, y)
        for m, x, y in zip(metrics, a, b, strict=True)
    ]


def merge_sketches(metric: Metric, x: Any, y: Any) -> Any:
    """A new sketch of both: the HLL union for distinct, the KLL merge for quantiles."""
    if metric.kind == "distinct":
        union = datasketches().hll_union(metric.lg_k)
        union.update(x)
        union.update(y)
        return union.get_result(hll_type())
    merged = datasketches().kll_doubles_sketch(metric.k)
    merged.merge(x)
    merged.merge(y)
    return merged


# -- the generated per-event code ---------------------------------------------------------------


def compile_updater(group_by: Sequence[str], metrics: Sequence[Metric], fields: Sequence[str] | None = None) -> Updater:
    """Build ``update(state, window_start, record)``: fold one decoded event into ``state``.

    ``record`` is a dict by field name, or with ``fields`` a tuple of those fields' values in
    that order (what the worker's projection decodes). The function is generated once per
    pipeline so that the per-event work is straight-line code with no loop over metrics;
    :func:`updater_source` shows exactly what runs.
    """
    updater: Updater = _compile(updater_source(group_by, metrics, fields), metrics)["update"]
    return updater


def compile_fold(
    group_by: Sequence[str],
    metrics: Sequence[Metric],
    fields: Sequence[str] | None,
    size_ms: int,
    step_ms: int,
    grace_ms: int,
    by_partition: bool = False,
    replay: bool = False,
) -> Fold:
    """Build ``fold(state, t, record, watermark, partition) -> late``, the hopping-window form of
    the updater: fold one event of time ``t`` into each of its ``size_ms / step_ms`` windows that
    is still open, and return how many of them were closed (late (event, window) pairs, not
    aggregated). A window ``[s, s + size)`` is closed when ``s + size + grace <= watermark``
    (:func:`consumer.window.window_is_late`): ``watermark`` is the partition's before or after
    this event, which gives the same answer. With ``by_partition`` the window part of the key is
    ``(s, *partition)`` (``partition``: the ``(topic, partition)`` the sink wants the partials
    apart by), else ``partition`` is ignored. ``step_ms`` must divide ``size_ms``.

    With ``replay`` the function takes a sixth argument, ``floor``: open windows starting before
    it are not aggregated (an unfinished replay kept them, and they hold the event already:
    sinks.ReplayFilter), while lateness is judged as without it, so the late counts come out as
    they did the first time; ``NO_WATERMARK`` aggregates every open window."""
    source = fold_source(group_by, metrics, fields, size_ms, step_ms, grace_ms, by_partition, replay)
    fold: Fold = _compile(source, metrics)["fold"]
    return fold


def _compile(source: str, metrics: Sequence[Metric]) -> dict[str, Any]:
    namespace: dict[str, Any] = {f"new{i}": _starter(m) for i, m in enumerate(metrics) if m.kind in SKETCH_KINDS}
    exec(compile(source, "<eventfleet updater>", "exec"), namespace)
    return namespace


def _starter(metric: Metric) -> Callable[[Any], Any]:
    """``new(value)``: a new sketch of ``metric`` holding one value (a new key's first event)."""
    make: Callable[[], Any]
    if metric.kind == "distinct":
        lg_k, hll, kind = metric.lg_k, datasketches().hll_sketch, hll_type()

        def make() -> Any:
            return hll(lg_k, kind)
    else:
        k, kll = metric.k, datasketches().kll_doubles_sketch

        def make() -> Any:
            return kll(k)

    def new(value: Any) -> Any:
        sketch = make()
        sketch.update(value)
        return sketch

    return new


def updater_source(group_by: Sequence[str], metrics: Sequence[Metric], fields: Sequence[str] | None = None) -> str:
    """The Python source of the updater for this grouping and these metrics."""
    value, lines, var = _reads(group_by, metrics, fields)
    key = ", ".join(["ws", *(value(g) for g in group_by)])
    lines = ["def update(state, ws, r):", f"    key = ({key},)", *lines]
    lines += _folds(metrics, var, "    ")
    return "\n".join(lines) + "\n"


def fold_source(
    group_by: Sequence[str],
    metrics: Sequence[Metric],
    fields: Sequence[str] | None,
    size_ms: int,
    step_ms: int,
    grace_ms: int,
    by_partition: bool = False,
    replay: bool = False,
) -> str:
    """The Python source of :func:`compile_fold`'s function."""
    if not 0 < step_ms <= size_ms or size_ms % step_ms:
        raise ValueError(f"the step ({step_ms} ms) must divide the size ({size_ms} ms)")
    windows = size_ms // step_ms
    value, lines, var = _reads(group_by, metrics, fields)
    groups = [f"g{i}" for i in range(len(group_by))]
    window = "(s, partition[0], partition[1])" if by_partition else "s"
    kept = [  # open windows before the floor: kept by the replay, not aggregated again
        "    if s < floor:",
        f"        s = -(-floor // {step_ms}) * {step_ms}",
    ]
    lines = [
        f"def fold(state, t, r, watermark, partition{', floor' if replay else ''}):",
        *lines,
        *(f"    {g} = {value(field)}" for g, field in zip(groups, group_by, strict=True)),
        f"    newest = t - t % {step_ms}",
        f"    s = newest - {size_ms - step_ms}  # the oldest window holding t",
        f"    closed = watermark - {size_ms + grace_ms}  # a window starting at or before it is closed",
        "    late = 0",
        "    if s <= closed:",
        f"        late = (closed - s) // {step_ms} + 1",
        f"        if late >= {windows}:",
        f"            return {windows}",
        f"        s += late * {step_ms}",
        *(kept if replay else []),
        "    while s <= newest:",
        f"        key = ({', '.join([window, *groups])},)",
        *_folds(metrics, var, "        "),
        f"        s += {step_ms}",
        "    return late",
    ]
    return "\n".join(lines) + "\n"


def _reads(
    group_by: Sequence[str], metrics: Sequence[Metric], fields: Sequence[str] | None
) -> tuple[Callable[[str], str], list[str], dict[tuple[str, bool], str]]:
    """How a field is read from ``r``, the lines that read each metric field once per event, and
    their variables by (field, as float): quantiles take floats (DataSketches' KLL of doubles
    converts a Python int several times slower than ``float()`` does)."""

    def value(field: str) -> str:
        return f"r[{field!r}]" if fields is None else f"r[{list(fields).index(field)}]"

    used = sorted({m.field for m in metrics if m.field is not None})
    var = {(field, False): f"v{i}" for i, field in enumerate(used)}
    lines = [f"    {var[f, False]} = {value(f)}" for f in used]
    for field in sorted({m.field for m in metrics if m.kind == "quantiles" and m.field is not None}):
        var[field, True] = f"f{used.index(field)}"
        lines.append(f"    {var[field, True]} = float({var[field, False]})")
    return value, lines, var


def _folds(metrics: Sequence[Metric], var: Mapping[tuple[str, bool], str], indent: str) -> list[str]:
    """Fold one event into ``state[key]``: a new partial, else each metric's update in turn."""

    def arg(m: Metric) -> str:
        return var[m.field or "", m.kind == "quantiles"]

    first = []
    for i, m in enumerate(metrics):
        if m.kind == "count":
            first.append("1")
        elif m.kind in SKETCH_KINDS:
            first.append(f"new{i}({arg(m)})")
        else:
            first.append(arg(m))
    lines = ["a = state.get(key)", "if a is None:", f"    state[key] = [{', '.join(first)}]", "else:"]
    for i, m in enumerate(metrics):
        if m.kind == "count":
            lines.append(f"    a[{i}] += 1")
        elif m.kind == "sum":
            lines.append(f"    a[{i}] += {arg(m)}")
        elif m.kind in SKETCH_KINDS:
            lines.append(f"    a[{i}].update({arg(m)})")
        else:
            op = "<" if m.kind == "min" else ">"
            lines += [f"    if {arg(m)} {op} a[{i}]:", f"        a[{i}] = {arg(m)}"]
    return [indent + line for line in lines]
