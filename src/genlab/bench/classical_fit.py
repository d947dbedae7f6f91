"""Fit time of the classical models against scikit-learn on the same data, in the same process.

Data: the MNIST subset (8,000 x 784, ``genlab.bench.data.mnist_root``) when available, and
scikit-learn's digits (1,797 x 64), both dequantized with one seeded draw and handed to both sides
as the same float64 matrix. Ours are fitted with ``fit_tensor`` (the pass functions the
LightningModule runs each epoch, on the whole matrix at once, without a Trainer); scikit-learn with
``fit``. Each contender runs twice and the faster time is kept (the machine may be shared). Both
sides run on one thread (torch intra-op threads and, through ``threadpoolctl``, numpy's BLAS and
OpenMP): with two libraries alternating in one process on a few shared cores, the idle threads of one
spin-wait while the other computes, which made multi-threaded timings erratic by factors of 10.

Matched settings, per model:

* ``pca`` / ``ppca``: the same ``K``; scikit-learn's default solver (it reports which it chose).
  ``ppca`` is ours against ``PCA.score`` of the same scikit-learn fit.
* ``factor_analysis``: the same ``K`` and tolerance (ours ``tol`` nats per example, scikit-learn's
  ``tol * n`` on the total), against scikit-learn's default randomized SVD and its exact ``lapack``.
* ``gmm_full`` / ``gmm_diag``: the same ``K``, ``tol``, ``reg_covar``, iteration cap and starting
  point (scikit-learn gets our k-means++ initialisation as ``weights_init``/``means_init``/
  ``precisions_init``; our time includes computing it), so both follow the same EM path.

Reported per model and dataset: seconds and iterations of each, ``speedup`` (scikit-learn's time over
ours), and the average log-likelihood of each on the fitted data (nats per example) or, for PCA, the
explained variance ratio.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from genlab.bench.data import mnist_root
from genlab.data.digits import DigitsDataModule
from genlab.data.vision import MNISTDataModule
from genlab.models.classical import PCA, PPCA, FactorAnalysis, GaussianMixture


def _best_of(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def _row(ours: tuple[float, Any], ref: tuple[float, Any], **extra: Any) -> dict[str, Any]:
    return {
        "seconds": round(ours[0], 4), "sklearn_seconds": round(ref[0], 4),
        "speedup": round(ref[0] / ours[0], 3), **extra,
    }  # fmt: skip


def _bench_dataset(x: np.ndarray, spec: dict, k_pca: int, k_fa: int, k_mix: int, full_iter: int, repeats: int):
    from sklearn.decomposition import PCA as SkPCA
    from sklearn.decomposition import FactorAnalysis as SkFactorAnalysis

    xt = torch.from_numpy(x)  # the same float64 memory for both sides
    n = len(x)
    out: dict[str, Any] = {}

    ours = _best_of(lambda: PCA(spec, k_pca).fit_tensor(xt), repeats)
    ref = _best_of(lambda: SkPCA(k_pca).fit(x), repeats)
    out["pca"] = _row(
        ours, ref, latent_dim=k_pca, sklearn_solver=getattr(ref[1], "_fit_svd_solver", "?"),
        explained_variance_ratio=round(float(ours[1].explained_variance_ratio.sum()), 6),
        sklearn_explained_variance_ratio=round(float(ref[1].explained_variance_ratio_.sum()), 6),
    )  # fmt: skip

    ours = _best_of(lambda: PPCA(spec, k_pca).fit_tensor(xt), repeats)
    out["ppca"] = _row(
        ours, ref, latent_dim=k_pca, loglik=round(float(ours[1].log_prob(xt).mean()), 4),
        sklearn_loglik=round(float(ref[1].score(x)), 4),
    )  # fmt: skip

    tol = 1e-5
    ours = _best_of(lambda: FactorAnalysis(spec, k_fa, tol=tol).fit_tensor(xt, max_iter=1000), repeats)
    fa: dict[str, Any] = {"latent_dim": k_fa, "tol_nats_per_example": tol, "iterations": int(ours[1].n_iter)}
    fa["loglik"] = round(float(ours[1].log_prob(xt).mean()), 4)
    for method in ("randomized", "lapack"):
        ref = _best_of(
            lambda m=method: SkFactorAnalysis(k_fa, tol=tol * n, svd_method=m, max_iter=1000, random_state=0).fit(x),
            repeats,
        )
        fa[f"sklearn_{method}"] = {
            "seconds": round(ref[0], 4), "speedup": round(ref[0] / ours[0], 3), "iterations": ref[1].n_iter_,
            "loglik": round(float(ref[1].score(x)), 4),
        }  # fmt: skip
    fa["seconds"] = round(ours[0], 4)
    out["factor_analysis"] = fa

    for ct, max_iter in (("full", full_iter), ("diag", 100)):
        out[f"gmm_{ct}"] = _bench_gmm(x, xt, spec, k_mix, ct, max_iter, repeats)
    return out


def _bench_gmm(x: np.ndarray, xt: torch.Tensor, spec: dict, k: int, ct: str, max_iter: int, repeats: int) -> dict:
    from sklearn.mixture import GaussianMixture as SkGaussianMixture

    start = GaussianMixture(spec, k, ct, tol=1e-3)
    start.initialize(start.features(xt))  # what our fit computes first: scikit-learn starts there too
    init = {
        "weights_init": start.weights.numpy(), "means_init": start.means.numpy(),
        "precisions_init": start.precisions.numpy(),
    }  # fmt: skip
    ours = _best_of(lambda: GaussianMixture(spec, k, ct, tol=1e-3).fit_tensor(xt, max_iter), repeats)
    ref = _best_of(
        lambda: SkGaussianMixture(
            k, covariance_type=ct, tol=1e-3, reg_covar=1e-6, max_iter=max_iter, init_params="random_from_data", **init
        ).fit(x),
        repeats,
    )
    return _row(
        ours, ref, num_mixtures=k, max_iter=max_iter, iterations=int(ours[1].n_iter),
        sklearn_iterations=ref[1].n_iter_, converged=bool(ours[1].converged), sklearn_converged=ref[1].converged_,
        loglik=round(float(ours[1].log_prob(xt).mean()), 4), sklearn_loglik=round(float(ref[1].score(x)), 4),
    )  # fmt: skip


def _dequantized(dm) -> tuple[np.ndarray, dict]:
    dm.setup("fit")
    x = dm.represent(dm.splits["train"][0], generator=torch.Generator().manual_seed(0))
    return x.flatten(1).double().numpy(), dm.spec.to_dict()


def run(quick: bool = False, threads: int = 1) -> dict:
    """Measure and return ``{"digits": {model: {...}}, "mnist": {...}, ...}`` (see the module docstring)."""
    from threadpoolctl import threadpool_info, threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with threadpool_limits(limits=threads):
            blas = sorted({f"{i['internal_api']}:{i['num_threads']}" for i in threadpool_info()})
            return {"threads": {"torch": torch.get_num_threads(), "numpy_blas_openmp": blas}, **_run(quick)}
    finally:
        torch.set_num_threads(before)


def _run(quick: bool) -> dict:
    repeats = 1 if quick else 2
    results: dict[str, Any] = {
        "ours": "fit_tensor (the LightningModule's pass functions, whole matrix, no Trainer), float64",
    }
    x, spec = _dequantized(DigitsDataModule(representation="dequantized", val_fraction=0.0, test_fraction=0.0))
    results["digits"] = {"shape": list(x.shape), **_bench_dataset(x, spec, 16, 10, 10, 100, repeats)}
    root = mnist_root()
    if root is not None and not quick:
        dm = MNISTDataModule(str(root), download=False, representation="dequantized", val_fraction=0.0)
        x, spec = _dequantized(dm)
        results["mnist"] = {"shape": list(x.shape), **_bench_dataset(x, spec, 50, 10, 10, 10, repeats)}
    return results
