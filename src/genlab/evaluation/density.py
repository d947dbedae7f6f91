"""Density: the per-example log-likelihood of the held-out split, its spread and its per-class means.

The split's mean NLL is the test stage's ``test/nll_nats`` (exact or a bound, see ``test/nll_kind``);
this test adds the distribution behind that mean, which ``genlab.score`` uses for percentiles.
"""

from __future__ import annotations

import torch

from genlab.evaluation.context import Context, Outcome
from genlab.metrics.likelihood import bits_per_dim


def not_applicable(ctx: Context) -> str | None:
    """Models without ``log_prob`` (autoencoders, PCA, k-means) have no density to test."""
    if not ctx.model.can("log_prob"):
        return "no likelihood: the model does not declare log_prob"
    return None


def run(ctx: Context) -> Outcome:
    """Score every held-out example once (seeded, so sampled bounds repeat).

    Writes ``<run>/evaluation/log_prob_<split>.pt``, the ``(N,)`` float64 nats, and returns
    ``nll_nats_median``, ``nll_nats_std`` (nats per example over the split), ``density_split``,
    ``density_num_examples`` and, for labelled data, a table ``nll_per_class`` (class, count, mean NLL
    in nats, bits/dim).
    """
    split = ctx.held_out()
    log_p = ctx.log_probs(split)
    folder = ctx.out_dir / "evaluation"
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(log_p, folder / f"log_prob_{split}.pt")
    nll = -log_p
    out = Outcome(
        metrics={
            "density_split": split,
            "density_num_examples": len(nll),
            "nll_nats_median": float(nll.median()),
            "nll_nats_std": float(nll.std()) if len(nll) > 1 else 0.0,
        }
    )
    if ctx.labelled and ctx.spec.vocab is None:
        y = ctx.split(split)[1]
        rows = []
        for c in range(ctx.spec.num_classes):
            member = nll[y == c]
            if len(member):
                mean = float(member.mean())
                rows.append([c, len(member), mean, float(bits_per_dim(torch.tensor(mean), ctx.spec))])
        out.tables["nll_per_class"] = (["class", "count", "nll_nats", "bits_per_dim"], rows)
    return out
