"""The verdict lines of the experiments in ``conf/experiment/``: what was measured, stated in numbers.

Each function takes the report's ok rows and its ``report:`` spec and returns a :class:`Verdict`; none decides
anything the numbers do not show.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

from genlab.report.rules import Verdict, elbow
from genlab.report.table import Row, value_of

LEVELS = {"DigitsDataModule": 17, "MNISTDataModule": 256, "FashionMNISTDataModule": 256, "CIFAR10DataModule": 256}


def grid(rows: list[Row], metric: str, by: str = "model.latent_dim") -> dict[tuple[str, float], float]:
    """``{(model, size): mean of metric}`` over the rows that have it (``size`` from the swept key ``by``)."""
    out = {}
    for r in rows:
        if r.mean(metric) is not None and by in r.key and "model" in r.key:
            out[(r.key["model"], float(r.key[by]))] = r.mean(metric)
    return out


def sizes(g: dict[tuple[str, float], float]) -> list[float]:
    """The sizes of a :func:`grid`, increasing."""
    return sorted({k for _, k in g})


def fmt_k(k: float) -> str:
    """``8`` for ``8.0``."""
    return str(int(k)) if float(k).is_integer() else str(k)


def pca_vs_autoencoders(rows: list[Row], spec: dict[str, Any]) -> Verdict:
    """PCA against the linear autoencoder (training split), and the nonlinear autoencoders against PCA (test)."""
    train, test = grid(rows, "eval/recon_mse_train"), grid(rows, "test/recon_mse")
    lines = []
    ks = [k for k in sizes(train) if ("pca", k) in train and ("linear_ae", k) in train]
    if ks:
        ratio = {k: train[("linear_ae", k)] / train[("pca", k)] for k in ks}
        low = min(ratio, key=ratio.get)
        lines.append(
            f"Training split: the linear autoencoder's error is {min(ratio.values()):.4f} to "
            f"{max(ratio.values()):.4f} times PCA's over K = {', '.join(fmt_k(k) for k in ks)} (1 = it meets PCA). "
            + ("It never goes below PCA" if ratio[low] >= 1 - 1e-4 else f"It goes below PCA at K={fmt_k(low)}")
            + f" (lowest ratio {ratio[low]:.5f}, at K={fmt_k(low)}); the largest gap is at K="
            f"{fmt_k(max(ratio, key=ratio.get))}."
        )
        tr = {k: test[("linear_ae", k)] / test[("pca", k)] for k in ks if ("linear_ae", k) in test}
        if tr:
            lines.append(f"Test split: linear autoencoder / PCA = {min(tr.values()):.4f} to {max(tr.values()):.4f}.")
    for model in ("ae_mlp", "ae_cnn"):
        ks = [k for k in sizes(test) if (model, k) in test and ("pca", k) in test]
        if not ks:
            continue
        ratio = {k: test[(model, k)] / test[("pca", k)] for k in ks}
        better = [k for k in ks if ratio[k] < 0.9]
        where = (f"more than 10% below PCA's at K = {', '.join(fmt_k(k) for k in better)}" if better
                 else "never more than 10% below PCA's")  # fmt: skip
        lines.append(
            f"Test split, {model} / PCA error: "
            + ", ".join(f"{ratio[k]:.2f} at K={fmt_k(k)}" for k in ks)
            + f"; {where}."
        )
    ks = [k for k in sizes(test) if ("ae_cnn", k) in test and ("ae_mlp", k) in test]
    if ks:
        r = [test[("ae_cnn", k)] / test[("ae_mlp", k)] for k in ks]
        lines.append(f"CNN / MLP test error: median {statistics.median(r):.2f} (from {min(r):.2f} to {max(r):.2f}).")
    return Verdict(lines)


def bottleneck(rows: list[Row], spec: dict[str, Any]) -> Verdict:
    """The latent size the elbow rule picks for each model, and the loss there against the largest size."""
    pct = float(spec.get("elbow_percent", 5))
    g = grid(rows, "val/best_loss")
    lines, marks = [], {}
    for model in sorted({m for m, _ in g}):
        ks = [k for k in sizes(g) if (model, k) in g]
        if len(ks) < 2:
            continue
        chosen = elbow(ks, [g[(model, k)] for k in ks], pct)
        marks[model] = chosen
        ends = [k for k in (ks[0], ks[-1]) if k != chosen]
        lines.append(
            f"{model}: the rule (stop when the next size lowers the validation loss by no more than {pct:g}%) picks "
            f"latent_dim={fmt_k(chosen)}, validation loss {g[(model, chosen)]:.4g}; "
            + ", ".join(f"{g[(model, k)]:.4g} at latent_dim={fmt_k(k)}" for k in ends)
            + "."
        )
    return Verdict(lines, marks)


def random_codes(rows: list[Row], spec: dict[str, Any]) -> Verdict:
    """FID, KID and class entropy of the samples from each way of drawing codes, best first."""
    found = [(r.mean("eval/fid"), r) for r in rows if r.mean("eval/fid") is not None]
    lines = []
    for fid, r in sorted(found, key=lambda t: t[0]):
        kid, ent = r.mean("eval/kid"), r.mean("eval/class_entropy_bits")
        name = f"{r.key.get('model')} with {r.key.get('model.code_prior')} codes"
        lines.append(f"{name}: FID {fid:.1f}, KID {kid:.3g}, class entropy {ent:.2f} bits (every class: 3.32).")
    floor = [r.mean("eval/fid_real_floor") for r in rows if r.mean("eval/fid_real_floor") is not None]
    if floor:
        lines.append(f"Real digits against real digits, the same N: FID {statistics.fmean(floor):.1f} (the floor).")
    by = {(r.key.get("model"), r.key.get("model.code_prior")): r.mean("eval/fid") for _, r in found}
    darts, fitted, vae = by.get(("ae_cnn", "normal")), by.get(("ae_cnn", "gmm")), by.get(("vae_cnn", "normal"))
    if darts and fitted and vae:
        lines.append(
            f"The autoencoder's FID falls from {darts:.1f} with N(0, I) codes to {fitted:.1f} with a mixture fitted to "
            f"its codes; the VAE's prior gives {vae:.1f}."
        )
    return Verdict(lines)


def density_ladder(rows: list[Row], spec: dict[str, Any]) -> Verdict:
    """Per data set, the models from lowest to highest test bits/dim, and the uniform model's log2 L."""
    lines = []
    for data in sorted({r.key.get("data", "") for r in rows}):
        mine = [r for r in rows if r.key.get("data", "") == data and r.mean("test/bits_per_dim") is not None]
        ranked = sorted(((r.mean("test/bits_per_dim"), r) for r in mine), key=lambda t: t[0])
        if not ranked:
            continue
        target = str(value_of(ranked[0][1].jobs[0], "data._target_") or "").rsplit(".", 1)[-1]
        ladder = ", ".join(f"{r.key.get('model')} {b:.3f}{' (bound)' if r.kinds.get('test/bits_per_dim') else ''}"
                           for b, r in ranked)  # fmt: skip
        uniform = f"; the uniform model: {math.log2(LEVELS[target]):.3f} (exact, log2 L)" if target in LEVELS else ""
        lines.append(f"{data or 'data'}, bits/dim from best to worst: {ladder}{uniform}.")
    return Verdict(lines)


def three_tests(rows: list[Row], spec: dict[str, Any]) -> Verdict:
    """Which model leads each test, in numbers."""
    lines = []
    for metric, better, what in (
        ("test/bits_per_dim", min, "density: lowest test bits/dim"),
        ("eval/fid", min, "sampling: lowest FID"),
        ("eval/probe_accuracy", max, "representation: highest probe accuracy"),
        ("eval/ari", max, "representation: highest ARI"),
    ):
        have = [(r.mean(metric), r.key.get("model")) for r in rows if r.mean(metric) is not None]
        if have:
            value, model = better(have)
            others = ", ".join(f"{m} {v:.3g}" for v, m in sorted(have, reverse=better is max) if m != model)
            lines.append(f"{what}: {model} ({value:.3g}); then {others or 'no other model'}.")
    return Verdict(lines)


def sampling_cost(rows: list[Row], spec: dict[str, Any]) -> Verdict:
    """Seconds per sample at each size, how they grow with the number of sub-pixels (the log-log slope), the naive
    sampler against the cached one, and the GPT's tokens per second."""
    cost: dict[str, dict[float, float]] = {}
    for r in rows:
        d, s = r.mean("sample/num_dims"), r.mean("sample/seconds_per_sample")
        if d and s:
            cost.setdefault(str(value_of(r.jobs[0], "case_model")), {})[d] = s
    lines = []
    for model, by in sorted(cost.items(), key=lambda t: max(t[1].values())):
        dims = sorted(by)
        text = ", ".join(f"{by[d]:.3g} s at {fmt_k(d)} dims" for d in dims)
        if len(dims) > 1:
            slope = (math.log(by[dims[-1]]) - math.log(by[dims[0]])) / (math.log(dims[-1]) - math.log(dims[0]))
            text += f"; seconds grow as dims^{slope:.2f}"
        if model.startswith("gpt"):
            text += f"; {dims[-1] / by[dims[-1]]:.0f} tokens per second"
        lines.append(f"{model}: {text}.")
    fast, naive = cost.get("pixelcnn", {}), cost.get("pixelcnn_naive", {})
    both = sorted(set(fast) & set(naive))
    if both:
        lines.append("PixelCNN, naive / cached sampler: " + ", ".join(f"{naive[d] / fast[d]:.1f}x at {fmt_k(d)} dims"
                                                                      for d in both) + ".")  # fmt: skip
    vae = cost.get("vae_mlp", {})
    if vae:
        d = max(vae)
        slower = [(by[d] / vae[d], m) for m, by in cost.items() if m != "vae_mlp" and d in by]
        if slower:
            lines.append(f"Against the VAE's one decoder pass at {fmt_k(d)} dims: "
                         + ", ".join(f"{m} {x:.0f}x" for x, m in sorted(slower)) + " slower per sample.")  # fmt: skip
    return Verdict(lines)
