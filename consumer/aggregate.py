"""Metric functions and their merge rules.

A partial aggregate is a list with one value per metric, in the pipeline's metric order. Every
metric has a fold (add one event) and a merge (combine two partials) that is associative and
commutative, so partials from different partitions, flushes and workers can be merged in any
order, in memory or in the sink, with the same result.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

KINDS = ("count", "sum", "min", "max")
"""Metric kinds: ``count`` takes no field, the others take one numeric field (``sum:price``)."""

Partial = list[Any]
Key = tuple[Any, ...]
State = dict[Key, Partial]
Updater = Callable[[State, Any, Any], None]


@dataclass(frozen=True)
class Metric:
    """One output column: ``name = "kind:field"`` in the pipeline file."""

    name: str
    kind: str
    field: str | None = None

    @classmethod
    def parse(cls, name: str, spec: str) -> "Metric":
        """Parse ``"count"`` or ``"sum:price_micros"``; ValueError says what is accepted."""
        if not isinstance(spec, str):
            spec = repr(spec)
        kind, colon, field = (part.strip() for part in spec.partition(":"))
        accepted = 'write "count", or "sum:FIELD", "min:FIELD", "max:FIELD"'
        if kind not in KINDS:
            raise ValueError(f"unknown metric {spec!r}; {accepted}")
        if kind == "count":
            if colon:
                raise ValueError(f"'count' takes no field (got {spec!r}); write \"count\"")
            return cls(name, kind)
        if not field:
            raise ValueError(f"'{kind}' needs a field; write \"{kind}:FIELD\"")
        return cls(name, kind, field)


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
    """Combine two partials of the same key (the rule the sinks apply in SQL too)."""
    return [MERGE_RULES[m.kind].python(x, y) for m, x, y in zip(metrics, a, b, strict=True)]


def compile_updater(group_by: Sequence[str], metrics: Sequence[Metric], fields: Sequence[str] | None = None) -> Updater:
    """Build ``update(state, window_start, record)``: fold one decoded event into ``state``.

    ``record`` is a dict by field name, or with ``fields`` a tuple of those fields' values in
    that order (what the worker's projection decodes). The function is generated once per
    pipeline so that the per-event work is straight-line code with no loop over metrics;
    :func:`updater_source` shows exactly what runs.
    """
    namespace: dict[str, Any] = {}
    exec(compile(updater_source(group_by, metrics, fields), "<eventfleet updater>", "exec"), namespace)
    updater: Updater = namespace["update"]
    return updater


def updater_source(group_by: Sequence[str], metrics: Sequence[Metric], fields: Sequence[str] | None = None) -> str:
    """The Python source of the updater for this grouping and these metrics."""

    def value(field: str) -> str:
        return f"r[{field!r}]" if fields is None else f"r[{list(fields).index(field)}]"

    used = sorted({m.field for m in metrics if m.field is not None})
    var = {field: f"v{i}" for i, field in enumerate(used)}
    key = ", ".join(["ws", *(value(g) for g in group_by)])
    lines = ["def update(state, ws, r):", f"    key = ({key},)"]
    lines += [f"    {var[f]} = {value(f)}" for f in used]
    first = ", ".join("1" if m.kind == "count" else var[m.field or ""] for m in metrics)
    lines += [
        "    a = state.get(key)",
        "    if a is None:",
        f"        state[key] = [{first}]",
        "        return",
    ]
    for i, m in enumerate(metrics):
        v = var.get(m.field or "", "")
        if m.kind == "count":
            lines.append(f"    a[{i}] += 1")
        elif m.kind == "sum":
            lines.append(f"    a[{i}] += {v}")
        else:
            op = "<" if m.kind == "min" else ">"
            lines += [f"    if {v} {op} a[{i}]:", f"        a[{i}] = {v}"]
    return "\n".join(lines) + "\n"
