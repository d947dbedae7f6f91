"""The report's figures (matplotlib, no display): metric-against-setting line plots and image montages."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from genlab.report.jobs import Job  # noqa: E402
from genlab.report.table import Row, unit_of, value_of  # noqa: E402


def axis_label(key: str) -> str:
    """``key [unit]`` from the schema (the key alone without a unit)."""
    unit = unit_of(key)
    return f"{key} [{unit}]" if unit else key


def x_of(row: Row, key: str) -> float | None:
    """The row's ``key`` as a number (swept value, else the first job's metric or config value)."""
    value = row.key.get(key, value_of(row.jobs[0], key) if row.jobs else None)
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def line_plot(rows: list[Row], spec: dict[str, Any], context: str, path: Path, marks: dict[str, float]) -> Path:
    """Plot ``spec["y"]`` (mean ± std over seeds) against ``spec["x"]``, one line per value of ``spec["hue"]``.

    Args:
        rows: the ok rows of the report.
        spec: ``{x, y, hue?, logx?, logy?, title?}``.
        context: what the title adds (the data and the settings).
        path: the PNG to write.
        marks: ``{hue value: x}`` drawn as dashed vertical lines (e.g. a chosen size).
    """
    x, y, hue = spec["x"], spec["y"], spec.get("hue")
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    groups: dict[str, list[tuple[float, float, float]]] = {}
    for row in rows:
        xv, mean = x_of(row, x), row.mean(y)
        if xv is None or mean is None:
            continue
        std = row.values[y][1] or 0.0
        groups.setdefault(str(row.key.get(hue, value_of(row.jobs[0], hue))) if hue else y, []).append((xv, mean, std))
    for label, points in groups.items():
        points.sort()
        line = ax.errorbar([p[0] for p in points], [p[1] for p in points], yerr=[p[2] for p in points],
                           marker="o", capsize=3, label=f"{hue}={label}" if hue else label)  # fmt: skip
        if label in marks:
            ax.axvline(marks[label], linestyle="--", color=line[0].get_color(), alpha=0.7)
    ax.set(xlabel=axis_label(x), ylabel=axis_label(y), xscale="log" if spec.get("logx") else "linear",
           yscale="log" if spec.get("logy") else "linear")  # fmt: skip
    xs = sorted({p[0] for points in groups.values() for p in points})
    if spec.get("logx") and 0 < len(xs) <= 12:  # the sizes themselves as ticks, in plain numbers
        ax.set_xticks(xs, [f"{v:g}" for v in xs])
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_title(f"{spec.get('title') or f'{y} against {x}'}\n{context}", fontsize=9)
    if len(groups) > 1 or hue:
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def montage(jobs: list[Job], spec: dict[str, Any], context: str, path: Path) -> Path | None:
    """One row per value of ``spec["rows"]`` (a key, or a list of keys): the image ``spec["file"]`` of the first ok
    job with that value among those matching ``spec["where"]`` (``{key: value}``). ``None`` when no job has the file."""
    where = {k: str(v) for k, v in (spec.get("where") or {}).items()}
    picked: dict[str, Path] = {}
    for job in jobs:
        if job.status == "ok" and all(str(value_of(job, k)) == v for k, v in where.items()):
            image = job.folder / spec["file"]
            if image.is_file():
                keys = spec["rows"] if isinstance(spec["rows"], list) else [spec["rows"]]
                picked.setdefault(" · ".join(str(value_of(job, k)) for k in keys), image)
    if not picked:
        return None
    fig, axes = plt.subplots(len(picked), 1, figsize=(8, 1.6 * len(picked) + 0.6), dpi=120, squeeze=False)
    for ax, (label, image) in zip(axes[:, 0], picked.items()):
        ax.imshow(plt.imread(image), interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9)
    where_text = f" ({', '.join(f'{k}={v}' for k, v in where.items())})" if where else ""
    fig.suptitle(f"{spec.get('title') or spec['file']}{where_text}\n{context}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
