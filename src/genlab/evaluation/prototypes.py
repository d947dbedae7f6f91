"""Prototypes: the held-out images a likelihood model finds most and least likely, class by class.

Ranking examples by ``log p(x)`` shows what a density has learnt to prefer: the most likely images are
its prototypes, the least likely its outliers (the "most and least likely" views of e.g. Salimans et
al. 2017 and Nalisnick et al. 2019, where the most likely images are often the simplest). The numbers
behind the figure are the per-class ``log_prob`` table.
"""

from __future__ import annotations

from typing import Any

import torch

from genlab.checks import positive_int
from genlab.evaluation.context import Context, Outcome
from genlab.utils.images import save_grid


def k_setting(ctx: Context) -> int:
    """``prototypes.k``, the images shown per class and end (default 8).

    Raises:
        ConfigError: unless it is a positive integer.
    """
    return positive_int("evaluation.prototypes.k", ctx.section("prototypes").get("k", 8))


def check(ctx: Context) -> None:
    """Refuse a malformed ``prototypes.k`` before any work. Raises: ConfigError (see :func:`k_setting`)."""
    k_setting(ctx)


def not_applicable(ctx: Context) -> str | None:
    """Why the test does not apply: no ``log_prob``, data that are not images, or no labels (else ``None``)."""
    if not ctx.model.can("log_prob"):
        return "no likelihood: the model does not declare log_prob (prototypes are ranked by log p(x))"
    if not ctx.is_image:
        return "prototypes are images: the data are not images"
    if not ctx.labelled:
        return "the data have no class labels (prototypes are chosen per class)"
    return None


def ranked(log_p: torch.Tensor, y: torch.Tensor, c: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of the ``k`` most and ``k`` least likely examples of class ``c``.

    Args:
        log_p: ``(N,)`` log-likelihoods in nats (NaN ranks as ``-inf``, least likely).
        y: ``(N,)`` labels.

    Returns:
        ``(most, least)``, each ``(min(k, count),)`` int64 indices into ``log_p``: ``most`` from the most
        likely down, ``least`` ending with the least likely (so a row reads from most to least likely).
        Ties keep the data order (a stable sort).
    """
    members = torch.nonzero(y == c).flatten()
    scores = torch.nan_to_num(log_p[members], nan=-torch.inf)
    order = members[torch.sort(scores, descending=True, stable=True).indices]
    n = min(k, len(order))
    return order[:n], order[len(order) - n :]


def run(ctx: Context) -> Outcome:
    """Rank the held-out split by ``ctx.log_probs`` (seeded; a sampled bound repeats) within each class.

    Returns:
        Metrics ``prototypes_k`` (the ``k`` used) and ``prototypes_split``; table ``log_prob_per_class``
        (class, count, mean, min and max ``log_prob`` in nats per example, exact statistics of the
        split's scores; a class absent from the split has count 0 and NaN statistics); figure
        ``prototypes`` when ``figures`` is on: one row per class, the ``k`` most likely images, a grey
        gap, the ``k`` least likely (the least likely last), empty tiles where a class has fewer than
        ``k`` images.

    Raises:
        ConfigError: for a malformed ``prototypes.k``.
    """
    k = k_setting(ctx)
    split = ctx.held_out()
    x, y = ctx.split(split)
    log_p = ctx.log_probs(split)
    rows, tiles = [], []
    blank = torch.full((1, *ctx.spec.shape), 0.5)
    for c in range(ctx.spec.num_classes):
        member = log_p[y == c]
        if len(member):
            rows.append([c, len(member), float(member.mean()), float(member.min()), float(member.max())])
        else:
            rows.append([c, 0, float("nan"), float("nan"), float("nan")])
        most, least = ranked(log_p, y, c, k)
        pad = blank.expand(k - len(most), *ctx.spec.shape)
        tiles += [x[most].float(), pad, blank, pad, x[least].float()]
    figures: dict[str, Any] = {}
    if ctx.cfg.get("figures"):
        figures["prototypes"] = save_grid(torch.cat(tiles), ctx.figure("prototypes"), nrow=2 * k + 1)
    columns = ["class", "count", "mean_log_prob_nats", "min_log_prob_nats", "max_log_prob_nats"]
    return Outcome(
        metrics={"prototypes_k": k, "prototypes_split": split},
        figures=figures,
        tables={"log_prob_per_class": (columns, rows)},
    )
