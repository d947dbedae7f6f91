"""The generative classifier of a class-conditional model: Bayes' rule on its own likelihoods.

``y_hat(x) = argmax_y [log p(x | y) + log p(y)]`` with ``log p(x | y)`` from ``log_prob(x, condition=y)``
and ``p(y)`` the label frequencies of the training split: the plug-in Bayes classifier (e.g. Ng &
Jordan 2001, "On discriminative vs. generative classifiers"; for deep conditional models, Fetaya et
al. 2020, "Understanding the limitations of conditional generative models"). With the true
class-conditional densities and priors it is the Bayes-optimal classifier.
"""

from __future__ import annotations

from typing import Any

import torch

from genlab.evaluation.context import Context, Outcome


def not_applicable(ctx: Context) -> str | None:
    """Why the test does not apply: a model that is not class-conditional, has no ``log_prob``, data
    without labels or without a training split (for ``p(y)``); else ``None``."""
    if not ctx.model.can("conditional"):
        return "the model is not class-conditional (train with model.conditional=true)"
    if not ctx.model.can("log_prob"):
        return "no likelihood: the model does not declare log_prob (the classifier needs log p(x | y))"
    if not ctx.labelled:
        return "the data have no class labels"
    if not ctx.has_split("train"):
        return "no training split to estimate the class prior p(y) from"
    return None


def log_prior(y_train: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``log p(y)`` from label frequencies: ``(N,)`` int64 labels -> ``(num_classes,)`` float64 nats
    (``-inf`` for a class absent from the training split, which is then never predicted)."""
    counts = torch.bincount(y_train, minlength=num_classes).double()
    return (counts / counts.sum()).log()


def class_log_likelihoods(ctx: Context, x: torch.Tensor) -> torch.Tensor:
    """``log p(x | y)`` for every class: ``(N, *shape)`` -> ``(N, num_classes)`` float64 nats.

    One batched pass of ``log_prob(x, condition=y)`` per class, each seeded with ``ctx.seed`` (a
    sampled bound repeats). NaN becomes ``-inf`` (a class the model cannot score is not chosen).
    """
    columns = []
    for c in range(ctx.spec.num_classes):

        def given(xb: torch.Tensor, c: int = c) -> torch.Tensor:
            return ctx.model.log_prob(xb, condition=torch.full((len(xb),), c, dtype=torch.long, device=xb.device))

        with torch.random.fork_rng(devices=[ctx.device] if ctx.device.type == "cuda" else []):
            torch.manual_seed(ctx.seed)
            columns.append(ctx.batched(given, x).double())
    return torch.nan_to_num(torch.stack(columns, 1), nan=-torch.inf)


def run(ctx: Context) -> Outcome:
    """Classify the held-out split by ``argmax_y log p(x | y) + log p(y)`` (ties: the lowest class).

    Returns:
        Metrics ``generative_classifier_accuracy`` (fraction of the held-out split classified
        correctly, exact for this split: ``N`` examples, ``num_classes`` likelihood passes each),
        ``generative_classifier_split`` and ``generative_classifier_num_examples`` (``N``); table
        ``generative_classifier_per_class`` (class, accuracy = recall of the class, count, prior =
        training frequency).
    """
    split = ctx.held_out()
    x, y = ctx.split(split)
    k = ctx.spec.num_classes
    prior = log_prior(ctx.split("train")[1], k)
    pred = (class_log_likelihoods(ctx, x) + prior).argmax(1)
    right = pred == y
    rows: list[list[Any]] = []
    for c in range(k):
        member = y == c
        if member.any():
            rows.append([c, float(right[member].double().mean()), int(member.sum()), float(prior[c].exp())])
    return Outcome(
        metrics={
            "generative_classifier_accuracy": float(right.double().mean()),
            "generative_classifier_split": split,
            "generative_classifier_num_examples": len(y),
        },
        tables={"generative_classifier_per_class": (["class", "accuracy", "count", "prior"], rows)},
    )
