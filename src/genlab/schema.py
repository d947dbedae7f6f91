"""Every key of ``metrics.json``: its unit, and whether the value is exact, a bound or an estimate.

``SCHEMA`` is the one list; the README's metrics table is printed from it (``python -m
genlab.schema``), and a test checks that every key a run writes is listed. Keys are flat,
``<stage>/<name>``; ``<...>`` stands for a part of the name (a transform, a data set, a label budget).
Kinds: ``exact``; ``bound`` (the VAE's importance-weighted NLL); ``estimate`` (from a finite sample, whose
size is the key named in the description); ``kind`` (``test/nll_kind`` says which of exact/bound applies);
``info`` (a count, a setting or a status).
"""

from __future__ import annotations

import re

#: (key pattern, unit, kind, meaning)
# fmt: off
SCHEMA: list[tuple[str, str, str, str]] = [
    # --- the run ----------------------------------------------------------------------------------
    ("status", "", "info", "ok | failed | diverged | interrupted"),
    ("reason", "", "info", "why a run failed, diverged or was interrupted (absent when ok)"),
    ("artifacts", "", "info", "files the run wrote: checkpoint (a diverged run: the last finite one), figure/<name>, grids"),
    ("config", "", "info", "overrides (the command line) and resolved (the whole composed config)"),
    ("versions", "", "info", "genlab, torch, lightning, and torch_threads (intra-op threads)"),
    ("git", "", "info", "commit of the genlab checkout and whether tracked files differed from it (dirty)"),
    ("test/nll_nats", "nats / example", "kind", "-log p(x) averaged over the test split (text: per block_size tokens)"),
    ("test/bits_per_dim", "bits / dim", "kind", "the same in bits per dimension (dequantized data: + log2 L)"),
    ("test/nll_kind", "", "info", "exact | bound | none: what test/nll_nats is"),
    ("test/loss", "nats or squared error / example", "kind", "the training objective on the test split (text: nats / token; pca, kmeans, linear_ae: squared error / example)"),
    ("test/recon_mse", "squared [0,1] units / dim", "exact", "mean squared error of reconstruct(x) against x"),
    ("test/elbo_nats", "nats / example", "bound", "VAE: the ELBO, a lower bound on log p(x)"),
    ("test/cond_elbo_nats", "nats / example", "bound", "conditional VAE: the ELBO of log p(x | y)"),
    ("test/kl_nats", "nats / example", "exact", "VAE: KL(q(z|x) || p(z)) at the posterior"),
    ("test/cond_nll_nats", "nats / example", "exact", "class-conditional pixel models: -log p(x | y)"),
    ("test/cond_bits_per_dim", "bits / dim", "exact", "the same in bits per dimension"),
    ("test/nats_per_char", "nats / char", "exact", "text: next-character NLL averaged over the test tokens"),
    ("test/bits_per_char", "bits / char", "exact", "text: the same in bits"),
    ("test/num_tokens", "tokens", "info", "text: tokens scored in the split"),
    ("test/iwae_k", "samples", "info", "VAE: importance samples per example of the bound"),
    ("test/{conditional,class_prior,block_size,vocab_size,num_params,num_parameters,covariance_type,num_clusters}", "", "info", "constants the model describes"),
    ("test/fit_passes", "passes", "info", "fitted models: passes over the training data"),
    ("test/converged", "", "info", "fitted models: whether the fit met its tolerance"),
    ("test/explained_variance_ratio", "fraction", "exact", "PCA: share of the training variance its K components explain"),
    ("val/best_loss", "as test/loss", "kind", "the best validation loss (the checkpoint tested)"),
    ("val/<name>", "as test/<name>", "kind", "the validation split's values, as in the test stage"),
    ("train/<name>", "as test/<name>", "kind", "training values (fitted models: per pass)"),
    ("sample/seconds_per_sample", "seconds", "estimate", "wall time of model.sample(n) / n, n = timing_samples (16)"),
    ("sample/dims_per_second", "dims / second", "estimate", "sub-pixels (images) or tokens (text) drawn per second: num_dims / seconds_per_sample"),
    ("sample/num_dims", "dims", "info", "dimensions of one sample: C x H x W sub-pixels, or block_size tokens"),
    ("time/fit_seconds", "seconds", "info", "wall time of the fit"),
    ("time/evaluation_seconds", "seconds", "info", "wall time of the evaluation tests"),
    ("eval/{density,samples,representation,prototypes,classifier,ood}", "", "info", "each test's status: ok, or n/a: <why it does not apply>"),
    ("eval/density_split", "", "info", "the held-out split scored (test, or val without one)"),
    ("eval/density_num_examples", "examples", "info", "its size"),
    ("eval/nll_nats_median", "nats / example", "kind", "median of -log p(x) over the split"),
    ("eval/nll_nats_std", "nats / example", "kind", "standard deviation of -log p(x) over the split"),
    ("eval/fid", "squared feature units", "estimate", "Frechet distance, the model's draws vs N held-out test images (Heusel et al. 2017); biased at small N"),
    ("eval/fid_decoder_mean", "squared feature units", "estimate", "the same for the decoder's mean given prior codes (latent-variable models)"),
    ("eval/{kid,kid_decoder_mean}", "squared feature units", "estimate", "kernel distance (Binkowski et al. 2018), mean over kid_subsets subsets of kid_subset_size, of the draws / decoder means"),
    ("eval/{kid_std,kid_std_decoder_mean}", "squared feature units", "estimate", "its std across the subsets"),
    ("eval/{fid_real_floor,kid_real_floor,kid_std_real_floor}", "squared feature units", "estimate", "the same metrics between two disjoint sets of N real images the network never trained on: what real data score at this N (not a strict lower bound)"),
    ("eval/fid_real_floor_sets", "", "info", "how the two real sets of the floor were drawn"),
    ("eval/fid_num_samples", "images", "info", "N, images per set (capped by the held-out images there are)"),
    ("eval/feature_net_test_accuracy", "fraction", "exact", "the feature classifier's accuracy on the held-out split"),
    ("eval/feature_net_cached", "", "info", "whether the feature network came from the cache"),
    ("eval/feature_net_seconds", "seconds", "info", "wall time to train (or load) the feature network"),
    ("eval/{classifier_score,classifier_score_decoder_mean}", "1..K", "estimate", "exp E_x KL(p(y|x) || p(y)) of the feature classifier on N samples (Salimans et al. 2016); order-independent"),
    ("eval/{class_histogram,class_histogram_decoder_mean}", "samples per class", "exact", "predicted classes of the N samples (a list of K counts)"),
    ("eval/{class_entropy_bits,class_entropy_bits_decoder_mean}", "bits", "exact", "entropy of that histogram (log2 K: every class equally often)"),
    ("eval/valid_word_rate", "fraction", "estimate", "text: generated words found in the training text, over text_num_chars generated characters"),
    ("eval/copy_rate", "fraction", "estimate", "text: generated copy_length-character strings found verbatim in the training text"),
    ("eval/{text_num_chars,text_num_words}", "characters, words", "info", "the size of the generated text"),
    ("eval/{representation_split,prototypes_split,generative_classifier_split,ood_split}", "", "info", "the held-out split used (test, or val without one)"),
    ("eval/{probe_num_train,probe_num_test,generative_classifier_num_examples,ood_num_examples}", "examples", "info", "split sizes"),
    ("eval/code_dim", "dims", "info", "size of encode(x)"),
    ("eval/probe_accuracy", "fraction", "estimate", "logistic regression on standardised codes of the whole training split (all labels), on N held-out examples"),
    ("eval/probe_accuracy_<n>_std", "fraction", "estimate", "their std (ddof 1)"),
    ("eval/probe_accuracy_<n>", "fraction", "estimate", "mean over probe_seeds probes with n labels per class"),
    ("eval/probe_seeds", "seeds", "info", "draws of each few-label probe"),
    ("eval/recon_mse_train", "squared [0,1] units / dim", "exact", "mean squared error of reconstruct(x) on the training split (what PCA minimises)"),
    ("eval/{ari,nmi}", "", "estimate", "adjusted Rand index / normalised mutual information of clusters (K = classes) against the labels, on N held-out examples"),
    ("eval/clusters_from", "", "info", "assign (the model's own clusters) or kmeans on codes"),
    ("eval/prototypes_k", "images", "info", "most and least likely held-out images shown per class"),
    ("eval/generative_classifier_accuracy", "fraction", "estimate", "argmax_y log p(x | y) + log p(y) (training label frequencies) on the held-out examples"),
    ("eval/ood_auroc_<set>", "", "estimate", "AUROC of log p(x): held-out split (in) against an outlier set, a transform of it or another data set; below 0.5 is kept"),
    ("eval/ood_num_<set>", "examples", "info", "size of an outlier data set"),
]
# fmt: on


def pattern(key: str) -> re.Pattern[str]:
    """The regular expression of a schema key: ``<...>`` matches a name part, ``{a,b}`` one of the names."""
    out = ""
    for part in re.split(r"(<[^>]+>|\{[^}]+\})", key):
        if part.startswith("<"):
            out += r"[A-Za-z0-9_.]+"
        elif part.startswith("{"):
            out += "(?:" + "|".join(re.escape(a) for a in part[1:-1].split(",")) + ")"
        else:
            out += re.escape(part)
    return re.compile(f"^{out}$")


def entry(key: str) -> tuple[str, str, str, str] | None:
    """The first schema row whose pattern matches ``key``, or ``None`` for an undocumented key."""
    for row in SCHEMA:
        if pattern(row[0]).match(key):
            return row
    return None


def markdown() -> str:
    """The schema as a Markdown table (the README's)."""
    lines = ["| key | unit | kind | meaning |", "|---|---|---|---|"]
    cell = lambda text: text.replace("|", "\\|")  # noqa: E731 - a | inside a cell would split it
    lines += [f"| `{cell(k)}` | {cell(u)} | {kind} | {cell(m)} |" for k, u, kind, m in SCHEMA]
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown())
