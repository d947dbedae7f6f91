"""``genlab.report``: a run, a sweep, or several of them as one table, its plots and a verdict.

``python -m genlab.report <folder> [<folder or glob> ...] [--out DIR]`` (``make report RUN=<folder>``) reads every
job's ``metrics.json`` (or, without one, its log) and writes ``report.md``, ``report.csv`` and the plots into the
folder it was given, or into ``outputs/report/<timestamp>/`` for several. An experiment's config may hold a
``report:`` section::

    report:
      title: reconstruction error against latent size
      columns: [test/recon_mse]                 # default: the swept keys and the headline metrics
      plots: [{x: model.latent_dim, y: test/recon_mse, hue: model, logx: true, logy: true}]
      images: {file: reconstructions.png, rows: model, where: {model.latent_dim: 8}}
      sort: [model, model.latent_dim]           # order of the rows (default: the jobs' order)
      verdict: genlab.report.verdicts.pca_vs_autoencoders   # f(rows, spec) -> Verdict

Only files are read: it runs offline and never imports wandb (nor torch).
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any

from genlab.errors import DataError
from genlab.report.jobs import Job, collect
from genlab.report.plots import line_plot, montage
from genlab.report.rules import Verdict, run_verdict
from genlab.report.table import columns, markdown, rows_of, settings, sort_rows, swept_keys, write_csv

__all__ = ["report", "collect"]


def spec_of(jobs: list[Job]) -> dict[str, Any]:
    """The ``report:`` section of the first job's config that has one (``{}`` if none does)."""
    return next((dict(j.config["report"]) for j in jobs if isinstance(j.config.get("report"), dict)), {})


def out_dir(paths: list[str], out: str | None) -> Path:
    """``out``; else the one folder given; else ``<GENLAB_ROOT or .>/outputs/report/<timestamp>``."""
    if out:
        return Path(out)
    if len(paths) == 1 and Path(paths[0]).is_dir():
        return Path(paths[0])
    return Path(os.environ.get("GENLAB_ROOT", ".")) / "outputs" / "report" / time.strftime("%Y-%m-%d_%H-%M-%S")


def context_of(jobs: list[Job]) -> str:
    """The data and the shared settings, for titles: ``data=digits · trainer.max_epochs=5``."""
    data = {str((j.config.get("data") or {}).get("_target_", "")).rsplit(".", 1)[-1].removesuffix("DataModule")
            for j in jobs} - {""}  # fmt: skip
    shared = [s for s in settings(jobs) if not s.startswith(("logger", "callbacks", "paths", "hydra", "evaluation"))]
    parts = ([f"data: {', '.join(sorted(data))}"] if data else []) + shared
    return " · ".join(parts)[:160]


def slug(text: str) -> str:
    """A file-name-safe version of ``text``."""
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")


def into_readme(readme: Path, name: str, block: str) -> None:
    """Replace the text between ``<!-- <name>:begin -->`` and ``<!-- <name>:end -->`` in ``readme`` with ``block``.

    Raises:
        DataError: when ``readme`` lacks the two markers.
    """
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    text = readme.read_text() if readme.is_file() else ""
    if begin not in text or end not in text.split(begin, 1)[-1]:
        raise DataError(f"report: {readme} has no '{begin}' ... '{end}' block to write the table into")
    head, rest = text.split(begin, 1)
    readme.write_text(f"{head}{begin}\n{block}\n{end}{rest.split(end, 1)[1]}")


def report(
    paths: list[str], out: str | None = None, readme: str | None = None, overrides: dict[str, Any] | None = None
) -> Path:
    """Write ``report.md``, ``report.csv`` and the plots of the jobs under ``paths``; returns ``report.md``.
    With ``readme``, the table, its date and settings also replace the block ``<!-- <experiment>:begin -->``
    ... ``end -->`` of that file (the experiment is the jobs' ``tags[0]``). ``overrides`` replace entries of the
    jobs' ``report:`` section (e.g. ``{"elbow_percent": 1}``).

    Raises:
        DataError: when a path is not a folder or holds no job, or ``readme`` has no such block.
        ConfigError: for a ``report.verdict`` that does not import.
    """
    jobs = collect(paths)
    spec = {**spec_of(jobs), **(overrides or {})}
    keys = list(spec.get("keys") or swept_keys(jobs))
    metrics = columns(jobs, spec.get("columns"))
    plots = list(spec.get("plots") or [])
    measured = list(dict.fromkeys([*metrics, *(p["y"] for p in plots), *(spec.get("measure") or [])]))
    rows = sort_rows(rows_of(jobs, keys, measured), list(spec.get("sort") or []))
    verdict: Verdict = run_verdict([r for r in rows if r.status == "ok"], spec)
    folder = out_dir(paths, out)
    folder.mkdir(parents=True, exist_ok=True)
    context = context_of(jobs)
    figures = []
    for p in plots:
        name = f"plot_{slug(p['y'])}_vs_{slug(p['x'])}.png"
        figures.append(line_plot([r for r in rows if r.status == "ok"], p, context, folder / name, verdict.marks))
    if spec.get("images"):
        image = montage(jobs, spec["images"], context, folder / f"images_{slug(Path(spec['images']['file']).stem)}.png")
        figures += [image] if image else []
    counts = {s: sum(j.status == s for j in jobs) for s in dict.fromkeys(j.status for j in jobs)}
    seeds = max((r.seeds for r in rows if r.status == "ok"), default=0)
    lines = [
        f"# {spec.get('title') or 'genlab report'}",
        "",
        f"{len(jobs)} jobs ({', '.join(f'{n} {s}' for s, n in counts.items())}), read {time.strftime('%Y-%m-%d %H:%M')}"
        f" from {', '.join(paths)}.",
        f"Settings shared by every job: `{' '.join(settings(jobs)) or 'none'}`." if len(jobs) > 1 else "",
        "Cells are the mean ± std (ddof 1) over the seeds of a row; one seed shows the value alone."
        if seeds > 1
        else "",
        "Units and kinds follow the metrics table of the README: exact, a bound, or an estimate from N samples.",
        "",
    ]
    if verdict.lines:
        lines += ["## Verdict", "", *(f"- {v}" for v in verdict.lines), ""]
    lines += ["## Table", "", markdown(rows, keys, metrics), ""]
    if figures:
        lines += ["## Figures", "", *(f"![{f.stem}]({f.name})" for f in figures), ""]
    path = folder / "report.md"
    path.write_text("\n".join(line for i, line in enumerate(lines) if line or (i and lines[i - 1])) + "\n")
    write_csv(rows, keys, measured, folder / "report.csv")
    if readme:
        name = next((str(j.config["tags"][-1]) for j in jobs if j.config.get("tags")), "report")
        shown = [s for s in settings(jobs) if not s.startswith(("paths.", "logger", "callbacks.rich_progress_bar"))]
        trainer = next((j.config["trainer"] for j in jobs if isinstance(j.config.get("trainer"), dict)), {})
        budget = ", ".join(f"`trainer.{k}={trainer[k]}`" for k in ("max_epochs", "max_time", "max_steps")
                           if trainer.get(k) not in (None, -1))  # fmt: skip
        stamp = (f"Measured {time.strftime('%Y-%m-%d')} by `make sweep EXP={name}` ({len(jobs)} jobs); settings: "
                 f"`{' '.join(shown) or 'the defaults'}`" + (f"; training budget per job: {budget}" if budget else "")
                 + ".")  # fmt: skip
        said = "".join(f"\n- {v}" for v in verdict.lines)
        into_readme(Path(readme), name, f"{stamp}\n\n{markdown(rows, keys, metrics)}\n{said}".rstrip())
    return path
