"""Jobs to rows: the swept keys, seeds aggregated into mean ± std, and the Markdown and CSV tables.

Units and kinds come from :mod:`genlab.schema`. A header reads ``key (unit; kind)``; a density column whose kind
depends on the model (``test/nll_nats``, ``test/bits_per_dim``) marks each bound ``(bound)`` in its cell.
"""

from __future__ import annotations

import csv
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from genlab.report.jobs import Job
from genlab.schema import entry

# the columns a report shows when its config names none (those some job has)
DEFAULT_COLUMNS = (
    "test/nll_nats", "test/bits_per_dim", "test/loss", "test/recon_mse", "val/best_loss", "eval/fid", "eval/kid",
    "eval/probe_accuracy", "eval/probe_accuracy_100", "eval/ari", "sample/seconds_per_sample", "time/fit_seconds",
)  # fmt: skip
SEED = "seed"
LOSSES = ("loss", "best_loss")  # objectives: nats for a likelihood, squared error for a model without one


@dataclass
class Row:
    """One line of the table: the jobs that share the swept values except ``seed`` (ok jobs aggregated), or one job
    that did not finish.

    Attributes:
        key: ``{swept key: value}``.
        jobs: the jobs of the row.
        status: ``ok`` or the failed job's status; ``reason`` why.
        values: ``{metric: (mean, std or None, n)}`` over the jobs that have it (std with ddof 1, ``None`` for n=1).
        kinds: ``{metric: "bound"}`` where a density value is a bound.
    """

    key: dict[str, str]
    jobs: list[Job]
    status: str = "ok"
    reason: str = ""
    values: dict[str, tuple[float, float | None, int]] = field(default_factory=dict)
    kinds: dict[str, str] = field(default_factory=dict)

    @property
    def seeds(self) -> int:
        """How many jobs (seeds) the row aggregates."""
        return len(self.jobs)

    def mean(self, metric: str) -> float | None:
        """The row's mean of ``metric`` (``None`` when no job has it)."""
        return self.values[metric][0] if metric in self.values else None


def value_of(job: Job, key: str) -> Any:
    """``key`` of a job: an override, else a metric, else a dotted path of its resolved config (``None`` if absent)."""
    if key in job.overrides:
        return job.overrides[key]
    if key in job.metrics:
        return job.metrics[key]
    node: Any = job.config
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def swept_keys(jobs: list[Job]) -> list[str]:
    """The override keys whose value differs between jobs (or that some jobs lack), in command-line order."""
    keys = list(dict.fromkeys(k for j in jobs for k in j.overrides))
    return [k for k in keys if len({j.overrides.get(k) for j in jobs}) > 1]


def settings(jobs: list[Job]) -> list[str]:
    """The overrides every job shares (``key=value``), for the report's header."""
    keys = list(dict.fromkeys(k for j in jobs for k in j.overrides))
    return [f"{k}={jobs[0].overrides[k]}" for k in keys if len({j.overrides.get(k) for j in jobs}) == 1]


def as_number(v: Any) -> float | None:
    """A finite float, or ``None`` (strings, lists, booleans, NaN)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v) if math.isfinite(v) else None


def rows_of(jobs: list[Job], keys: list[str], metrics: list[str]) -> list[Row]:
    """Group ``jobs`` by their values of ``keys`` except ``seed``; ok jobs of a group share a row, every job that
    did not finish gets its own."""
    by_key = [k for k in keys if k != SEED]
    rows: dict[tuple, Row] = {}
    failed: list[Row] = []
    for job in jobs:
        key = {k: str(value_of(job, k)) for k in by_key}
        if job.status != "ok":
            failed.append(Row(key, [job], job.status, job.reason))
            continue
        rows.setdefault(tuple(key.values()), Row(key, [])).jobs.append(job)
    for row in rows.values():
        for m in metrics:
            xs = [x for x in (as_number(j.metrics.get(m)) for j in row.jobs) if x is not None]
            if xs:
                row.values[m] = (statistics.fmean(xs), statistics.stdev(xs) if len(xs) > 1 else None, len(xs))
            if entry(m) and entry(m)[2] == "kind":
                nll_kinds = {j.metrics.get("test/nll_kind") for j in row.jobs}
                if "bound" in nll_kinds:
                    row.kinds[m] = "bound"
                elif "none" in nll_kinds and m.rsplit("/", 1)[-1] in LOSSES:  # no likelihood: the loss is an error
                    row.kinds[m] = "squared error"
    return [*rows.values(), *failed]


def sort_rows(rows: list[Row], by: list[str]) -> list[Row]:
    """``rows`` ordered by the values of ``by`` (numbers as numbers, before words), finished rows first; ``by``
    empty keeps the jobs' order."""
    if not by:
        return rows

    def order(row: Row) -> list[tuple]:
        values = [row.key.get(k, value_of(row.jobs[0], k) if row.jobs else "") for k in by]
        numbers = [as_number(_float(v)) for v in values]
        return [(row.status != "ok", 0.0, "")] + [
            (False, n, "") if n is not None else (True, 0.0, str(v)) for n, v in zip(numbers, values)
        ]

    return sorted(rows, key=order)


def _float(v: Any) -> float | None:
    """``float(v)``, or ``None`` where that fails."""
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def columns(jobs: list[Job], wanted: list[str] | None) -> list[str]:
    """``wanted``, or the :data:`DEFAULT_COLUMNS` that some job has."""
    if wanted:
        return list(wanted)
    return [c for c in DEFAULT_COLUMNS if any(as_number(j.metrics.get(c)) is not None for j in jobs)]


def unit_of(metric: str) -> str:
    """The schema's unit of ``metric``, following ``as test/<name>`` references (``""`` when it has none)."""
    row = entry(metric)
    if row is None:
        return ""
    if row[1].startswith("as "):
        name = metric.split("/", 1)[1].removeprefix("best_")  # val/best_loss -> test/loss
        return "" if metric == f"test/{name}" else unit_of(f"test/{name}")
    return row[1]


def header(metric: str) -> str:
    """``metric (unit; kind)`` from the schema; density keys say ``exact unless marked``."""
    row = entry(metric)
    if row is None:
        return metric
    _, _, kind, _ = row
    unit = unit_of(metric)
    kind = {"kind": "exact unless marked", "info": ""}.get(kind, kind)
    inner = "; ".join(p for p in (unit, kind) if p)
    return f"{metric} ({inner})" if inner else metric


def cell(row: Row, metric: str) -> str:
    """``mean ± std`` (4 significant digits), ``mean`` for one seed, ``—`` when absent; a bound is marked
    ``(bound)``, and the loss of a model without a likelihood ``(squared error)``."""
    if metric not in row.values:
        return "—"
    mean, std, _ = row.values[metric]
    text = f"{mean:.4g}" if std is None else f"{mean:.4g} ± {std:.2g}"
    return f"{text} ({row.kinds[metric]})" if metric in row.kinds else text


def markdown(rows: list[Row], keys: list[str], metrics: list[str]) -> str:
    """The table in Markdown: the swept keys, ``seeds``, ``status`` and one column per metric."""
    keys = [k for k in keys if k != SEED]
    head = [*keys, "seeds", "status", *(header(m) for m in metrics)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        status = r.status if r.status == "ok" else f"{r.status}: {r.reason}".replace("|", "/")
        cells = [*(r.key.get(k, "") for k in keys), str(r.seeds), status, *(cell(r, m) for m in metrics)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_csv(rows: list[Row], keys: list[str], metrics: list[str], path: Path) -> Path:
    """``report.csv``: the swept keys, seeds, status, reason, ``<metric>`` (mean) and ``<metric>_std`` per metric,
    and the job folders."""
    keys = [k for k in keys if k != SEED]
    fields = [*keys, "seeds", "status", "reason", *(f"{m}{s}" for m in metrics for s in ("", "_std")), "folders"]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for r in rows:
            line: dict[str, Any] = {**r.key, "seeds": r.seeds, "status": r.status, "reason": r.reason}
            for m in metrics:
                mean, std, _ = r.values.get(m, (None, None, 0))
                line[m], line[f"{m}_std"] = mean, std
            line["folders"] = " ".join(str(j.folder) for j in r.jobs)
            writer.writerow(line)
    return path
