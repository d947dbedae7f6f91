"""Representation: what a model's code ``encode(x)`` knows about the labels, and what its decoder draws.

* Linear probes (Alain & Bengio 2016, "Understanding intermediate layers using linear classifier
  probes"): a multinomial logistic regression (scikit-learn ``LogisticRegression``, L-BFGS) on the
  standardised codes of the training split, scored on the held-out split; with every training label,
  and with ``n`` labels per class (``representation.labels_per_class``) over ``representation.seeds``
  seeded draws, the semi-supervised reading of Kingma et al. 2014.
* Clustering (``representation.clustering``): the model's own ``assign`` when it declares one, else
  k-means (Lloyd 1982; scikit-learn ``KMeans``) on the held-out codes with K = number of classes,
  compared with the labels by the adjusted Rand index (Hubert & Arabie 1985) and normalised mutual
  information (Strehl & Ghosh 2002; scikit-learn's arithmetic normalisation).
* Figures (``figures: true``, image data): a 2-D map of the codes, interpolations and traversals
  decoded (models with ``decode``), and the components (models with ``components``).

Only the protocol is used: ``encode``, ``decode``, ``assign``, ``component_vectors`` and ``can``.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch

from genlab.checks import require
from genlab.errors import ConfigError
from genlab.evaluation.context import Context, Outcome
from genlab.utils.images import save_grid

#: L-BFGS iterations of every probe (a probe stopped early is still a linear classifier, slightly pessimistic)
PROBE_MAX_ITER = 200
#: k-means restarts on the codes (the best inertia is kept)
KMEANS_N_INIT = 4
#: most component images drawn
MAX_COMPONENTS = 16
#: figure tiles smaller than this many pixels a side are enlarged (nearest neighbour) to stay legible


#: the settings of conf/evaluation/default.yaml, for keys a config leaves out
DEFAULTS = {"labels_per_class": [], "seeds": 3, "clustering": False, "interpolation_pairs": 4,
            "interpolation_steps": 8, "traversal_dims": 4, "traversal_steps": 8}  # fmt: skip


def _positive_int(section: dict[str, Any], key: str, minimum: int = 1) -> int:
    value = section.get(key)
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= minimum
    require(ok, f"evaluation.representation.{key}", f"an integer >= {minimum}", value)  # genlab.checks' message
    return value


def settings(ctx: Context) -> dict[str, Any]:
    """The ``representation`` settings, checked, with defaults for absent keys.

    Returns:
        ``labels_per_class`` (list of int), ``seeds``, ``clustering`` (bool), ``interpolation_pairs``,
        ``interpolation_steps``, ``traversal_dims``, ``traversal_steps``.

    Raises:
        ConfigError: for a count that is not a positive integer (steps: at least 2).
    """
    s = {**DEFAULTS, **ctx.section("representation")}
    per_class = s["labels_per_class"] or []
    if not isinstance(per_class, (list, tuple)) or any(
        isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in per_class
    ):
        raise ConfigError(
            f"evaluation.representation.labels_per_class must be a list of positive integers, got {per_class!r}"
        )
    out = {"labels_per_class": [int(n) for n in per_class], "clustering": bool(s["clustering"])}
    out["seeds"] = _positive_int(s, "seeds")
    for key, low in (("interpolation_pairs", 1), ("interpolation_steps", 2), ("traversal_dims", 1),
                     ("traversal_steps", 2)):  # fmt: skip
        out[key] = _positive_int(s, key, low)
    return out


def check(ctx: Context) -> None:
    """Refuse impossible settings before any work.

    Raises:
        ConfigError: for a malformed setting (see :func:`settings`), or, for a model with ``encode`` on
            labelled data, a ``labels_per_class`` larger than the smallest class of the training split
            (the draw of ``n`` labelled examples per class would be impossible).
    """
    s = settings(ctx)
    if not s["labels_per_class"] or not_applicable(ctx) is not None:
        return
    y = ctx.split("train")[1]
    counts = torch.bincount(y, minlength=ctx.spec.num_classes)
    smallest = int(counts.min())
    if max(s["labels_per_class"]) > smallest:
        c = int(counts.argmin())
        raise ConfigError(
            f"evaluation.representation.labels_per_class={s['labels_per_class']} asks for "
            f"{max(s['labels_per_class'])} labelled training examples per class, but class {c} has only "
            f"{smallest} in the training split; choose at most {smallest}"
        )


def not_applicable(ctx: Context) -> str | None:
    """Why the test does not apply: no ``encode``, no class labels, or no training split (else ``None``)."""
    if not ctx.model.can("encode"):
        return "no latent code: the model does not declare encode (autoregressive models have no representation)"
    if not ctx.labelled:
        return "the data have no class labels (the probe and the clustering score codes against labels)"
    if not ctx.has_split("train"):
        return "no training split to fit the probe on"
    return None


def codes(ctx: Context, x: torch.Tensor) -> torch.Tensor:
    """``encode`` of ``x`` ``(N, *shape)`` in batches: ``(N, code_dim)`` on the CPU, in the model's dtype.

    Raises:
        ValueError: for codes that are not finite (a diverged model), naming how many.
    """
    z = ctx.batched(ctx.model.encode, x).flatten(1)
    bad = int((~torch.isfinite(z)).any(1).sum())
    if bad:
        raise ValueError(f"encode gave non-finite codes for {bad} of {len(z)} examples; the model has diverged")
    return z


def fit_probe(z_train: np.ndarray, y_train: np.ndarray) -> Any:
    """A multinomial logistic regression on standardised codes (Alain & Bengio 2016).

    Args:
        z_train: ``(N, code_dim)`` codes, already standardised (see :func:`run`).
        y_train: ``(N,)`` integer labels (at least two classes).

    Returns:
        The fitted scikit-learn ``LogisticRegression`` (L-BFGS, ``C=1``, at most :data:`PROBE_MAX_ITER`
        iterations; a convergence warning is silenced: the classifier is used as it stands).
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    probe = LogisticRegression(C=1.0, max_iter=PROBE_MAX_ITER)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        probe.fit(z_train, y_train)
    return probe


def few_label_indices(y: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of ``n`` examples of every class present in ``y`` ``(N,)``, drawn without replacement by ``rng``.

    Returns:
        ``(n * classes,)`` int64 indices, sorted. Raises: ConfigError for a class with fewer than ``n``.
    """
    picks = []
    for c in np.unique(y):
        members = np.flatnonzero(y == c)
        if len(members) < n:
            raise ConfigError(f"class {c} has {len(members)} training examples, fewer than labels_per_class={n}")
        picks.append(rng.choice(members, size=n, replace=False))
    return np.sort(np.concatenate(picks))


def run(ctx: Context) -> Outcome:
    """Probe, cluster and draw the codes of the training and held-out splits.

    Metrics (accuracies are fractions in ``[0, 1]`` of the held-out split, exact for the fitted probe):

    * ``probe_accuracy``: the probe fitted on every training label;
    * ``probe_accuracy_<n>`` and ``probe_accuracy_<n>_std``: mean and sample standard deviation
      (``ddof=1``; 0 for one seed) over ``probe_seeds`` probes, each fitted on ``n`` labelled training
      examples per class drawn with seed ``ctx.seed + seed index`` (the standardisation uses every
      training code: codes are unlabelled information);
    * ``probe_seeds``, ``representation_split``, ``probe_num_train``, ``probe_num_test``, ``code_dim``;
    * with ``clustering``: ``ari``, ``nmi`` (in ``[-0.5, 1]`` and ``[0, 1]``; exact for the given
      clusters) and ``clusters_from`` (``"assign"`` or ``"kmeans on codes"``);
    * for models that reconstruct, ``recon_mse_train``: the reconstruction error on the training split.

    Table ``probe_per_class`` (class, accuracy, count). Figures (``figures: true`` and image data):
    ``codes_2d``, ``interpolations`` and ``traversals`` (``decode``), ``components`` (``components``).

    Raises:
        ConfigError: for malformed settings (:func:`settings`).
        ValueError: for non-finite codes (:func:`codes`).
    """
    from sklearn.preprocessing import StandardScaler

    s = settings(ctx)
    held = ctx.held_out()
    x_tr, y_tr = ctx.split("train")
    x_te, y_te = ctx.split(held)
    z_tr, z_te = codes(ctx, x_tr), codes(ctx, x_te)
    scaler = StandardScaler().fit(z_tr.double().numpy())
    a_tr, a_te = scaler.transform(z_tr.double().numpy()), scaler.transform(z_te.double().numpy())
    ny_tr, ny_te = y_tr.numpy(), y_te.numpy()

    probe = fit_probe(a_tr, ny_tr)
    pred = probe.predict(a_te)
    metrics: dict[str, Any] = {
        "representation_split": held,
        "probe_num_train": len(ny_tr),
        "probe_num_test": len(ny_te),
        "code_dim": int(z_tr.shape[1]),
        "probe_accuracy": float(np.mean(pred == ny_te)),
    }
    rows = []
    for c in range(ctx.spec.num_classes):
        member = ny_te == c
        if member.any():
            rows.append([c, float(np.mean(pred[member] == c)), int(member.sum())])
    tables = {"probe_per_class": (["class", "accuracy", "count"], rows)}

    for n in s["labels_per_class"]:
        scores = []
        for seed in range(s["seeds"]):
            idx = few_label_indices(ny_tr, n, np.random.default_rng(ctx.seed + seed))
            few = fit_probe(a_tr[idx], ny_tr[idx])
            scores.append(float(np.mean(few.predict(a_te) == ny_te)))
        metrics[f"probe_accuracy_{n}"] = float(np.mean(scores))
        metrics[f"probe_accuracy_{n}_std"] = float(np.std(scores, ddof=1)) if len(scores) > 1 else 0.0
    if s["labels_per_class"]:
        metrics["probe_seeds"] = s["seeds"]

    if ctx.model.can("reconstruct"):  # the objective of PCA and the autoencoders, on the examples they fitted
        with torch.random.fork_rng(devices=[ctx.device] if ctx.device.type == "cuda" else []):
            torch.manual_seed(ctx.seed)
            r = ctx.batched(ctx.model.reconstruct, x_tr)
        metrics["recon_mse_train"] = float((r.double() - x_tr.double()).pow(2).flatten(1).mean(1).mean())

    if s["clustering"]:
        metrics.update(cluster(ctx, x_te, z_te, ny_te))

    figures = draw(ctx, s, x_te, z_te, ny_te) if ctx.cfg.get("figures") and ctx.is_image else {}
    return Outcome(metrics=metrics, figures=figures, tables=tables)


def cluster(ctx: Context, x: torch.Tensor, z: torch.Tensor, y: np.ndarray) -> dict[str, Any]:
    """Clusters of the held-out split scored against its labels.

    Args:
        x: ``(N, *shape)`` held-out examples (for ``assign``).
        z: ``(N, code_dim)`` their codes (for k-means).
        y: ``(N,)`` labels.

    Returns:
        ``{"ari", "nmi", "clusters_from"}``: scikit-learn ``adjusted_rand_score`` (Hubert & Arabie 1985)
        and ``normalized_mutual_info_score``; the clusters are the model's ``assign`` when it declares
        it, else ``KMeans(n_clusters=num_classes, n_init=KMEANS_N_INIT, random_state=ctx.seed)`` fitted on
        the held-out codes as they are (not standardised: k-means uses the code space's own distances).
    """
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    if ctx.model.can("assign"):
        labels, source = ctx.batched(ctx.model.assign, x).numpy(), "assign"
    else:
        k = min(ctx.spec.num_classes, len(z))
        km = KMeans(n_clusters=k, n_init=KMEANS_N_INIT, random_state=ctx.seed)
        labels, source = km.fit_predict(z.double().numpy()), "kmeans on codes"
    return {
        "ari": float(adjusted_rand_score(y, labels)),
        "nmi": float(normalized_mutual_info_score(y, labels)),
        "clusters_from": source,
    }


# --- figures ---------------------------------------------------------------------------------------
def plane(z: np.ndarray, seed: int) -> tuple[np.ndarray, str]:
    """2-D coordinates of codes ``(N, d)``: the codes when ``d == 2``; the first two principal components
    (scikit-learn ``PCA``) when ``d > 2``; the code against a seeded jitter when ``d == 1``.

    Returns:
        ``((N, 2) float64, axis description)``.
    """
    if z.shape[1] == 2:
        return z, "code"
    if z.shape[1] == 1:
        jitter = np.random.default_rng(seed).uniform(-1, 1, size=(len(z), 1))
        return np.hstack([z, jitter]), "code (x) and jitter (y)"
    from sklearn.decomposition import PCA

    return PCA(n_components=2, svd_solver="full").fit_transform(z), "first two principal components of the codes"


def draw(ctx: Context, s: dict[str, Any], x: torch.Tensor, z: torch.Tensor, y: np.ndarray) -> dict[str, Any]:
    """The figures of :func:`run` from the held-out examples ``x`` ``(N, *shape)``, codes ``z`` ``(N, d)``
    and labels ``y`` ``(N,)``; returns ``{name: PNG path}``."""
    figures = {"codes_2d": codes_map(ctx, z, y)}
    if ctx.model.can("decode") and len(z) >= 2:
        figures["interpolations"] = interpolations(ctx, x, z, y, s["interpolation_pairs"], s["interpolation_steps"])
    if ctx.model.can("decode"):
        figures["traversals"] = traversals(ctx, z, int(y[0]), s["traversal_dims"], s["traversal_steps"])
    if ctx.model.can("components"):
        figures["components"] = components(ctx)
    return figures


def codes_map(ctx: Context, z: torch.Tensor, y: np.ndarray) -> Any:
    """Figure ``codes_2d``: held-out codes in 2-D (:func:`plane`) coloured by label (matplotlib, Agg)."""
    import matplotlib
    from matplotlib.figure import Figure

    p, axes = plane(z.double().numpy(), ctx.seed)
    k = ctx.spec.num_classes
    cmap = matplotlib.colormaps["tab10" if k <= 10 else "tab20" if k <= 20 else "turbo"]
    fig = Figure(figsize=(5.5, 5))
    ax = fig.add_subplot()
    for c in range(k):
        member = y == c
        if member.any():
            color = cmap(c) if k <= 20 else cmap(c / max(k - 1, 1))
            ax.scatter(p[member, 0], p[member, 1], s=5, color=color, label=str(c), alpha=0.7, linewidths=0)
    ax.set_title(f"held-out codes ({z.shape[1]}-d): {axes}", fontsize=8)
    ax.legend(markerscale=3, fontsize=7, loc="best", title="class", title_fontsize=7)
    path = ctx.figure("codes_2d")
    fig.savefig(path, dpi=110)
    return path


def decode_as(ctx: Context, z: torch.Tensor, label: int) -> torch.Tensor:
    """``decode(z)`` in batches; a conditional model decodes every code with class ``label`` (without one it would
    cycle the classes from tile to tile)."""
    if not ctx.model.can("conditional"):
        return ctx.batched(ctx.model.decode, z)
    return ctx.batched(lambda b: ctx.model.decode(b, condition=torch.full((len(b),), label, device=b.device)), z)


def interpolations(ctx: Context, x: torch.Tensor, z: torch.Tensor, y: np.ndarray, pairs: int, steps: int) -> Any:
    """Figure ``interpolations``: one row per pair of held-out images (drawn with salt 31): the first image,
    ``decode((1 - t) z_a + t z_b)`` for ``steps`` values of ``t`` in ``[0, 1]``, the second image (a conditional
    model decodes a row with the first image's class ``y``)."""
    pairs = min(pairs, len(z) // 2)
    pick = torch.randperm(len(z), generator=ctx.generator(31))[: 2 * pairs]
    a, b = pick[:pairs], pick[pairs:]
    t = torch.linspace(0, 1, steps, dtype=torch.float64)[None, :, None]
    path_z = ((1 - t) * z[a, None].double() + t * z[b, None].double()).to(z.dtype)  # (pairs, steps, d)
    decoded = torch.stack([decode_as(ctx, row, int(y[i])) for row, i in zip(path_z, a.tolist(), strict=True)])
    decoded = decoded.view(pairs, steps, *ctx.spec.shape).float()
    rows = torch.cat([x[a, None].float(), decoded, x[b, None].float()], 1).flatten(0, 1)
    return save_grid(rows, ctx.figure("interpolations"), nrow=steps + 2)


def traversals(ctx: Context, z: torch.Tensor, label: int, dims: int, steps: int) -> Any:
    """Figure ``traversals``: row ``j`` decodes the mean held-out code with coordinate ``j`` moved over
    ``mean_j + [-3, 3] std_j`` (``steps`` values), for the first ``dims`` coordinates (a conditional model: all
    with class ``label``)."""
    d = min(dims, z.shape[1])
    zz = z.double()
    mean, std = zz.mean(0), zz.std(0) if len(zz) > 1 else torch.ones(zz.shape[1], dtype=torch.float64)
    offsets = torch.linspace(-3, 3, steps, dtype=torch.float64)
    grid = mean.repeat(d, steps, 1)  # (d, steps, code_dim)
    for j in range(d):
        grid[j, :, j] = mean[j] + offsets * std[j]
    decoded = decode_as(ctx, grid.flatten(0, 1).to(z.dtype), label)
    return save_grid(decoded.view(d * steps, *ctx.spec.shape), ctx.figure("traversals"), nrow=steps)


def components(ctx: Context) -> Any:
    """Figure ``components``: the first (up to 16) rows of ``component_vectors()`` ``(K, P)`` as images,
    each scaled to ``[0, 1]`` by its own minimum and maximum (a constant vector is drawn mid-grey)."""
    with torch.no_grad():
        v = ctx.model.component_vectors()[:MAX_COMPONENTS].detach().double().cpu()
    low, high = v.min(1, keepdim=True).values, v.max(1, keepdim=True).values
    span = high - low
    scaled = torch.where(span > 0, (v - low) / span.clamp(min=1e-300), torch.full_like(v, 0.5))
    images = scaled.reshape(len(v), *ctx.spec.shape)
    return save_grid(images, ctx.figure("components"), nrow=min(8, len(v)))
