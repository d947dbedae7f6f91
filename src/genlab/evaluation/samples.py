"""The sampling test: how close a model's samples are to real data.

Images (labelled data): for each form of samples (``ctx.sample_forms()``: ``draw``, and ``decoder_mean`` for
latent-variable models), ``N`` samples are mapped to the data's level grid
(:func:`~genlab.evaluation.context.to_levels`) and compared with ``N`` real held-out images through the
genlab-trained feature network (:mod:`genlab.evaluation.features`):

* FID, the Fréchet distance between Gaussians fitted to the two feature sets (Heusel et al. 2017, Eq. 6),
  and KID, the unbiased squared MMD with the cubic polynomial kernel averaged over random subsets
  (Bińkowski et al. 2018, Sec. 3), both by ``torchmetrics``;
* their floors: the same numbers between two disjoint sets of ``N`` real images the network never trained
  on (what a model that draws from the data distribution would score at this ``N``);
* the classifier score, ``exp(E_x KL(p(y|x) || p(y)))`` (the Inception score of Salimans et al. 2016,
  Sec. 4, with the feature classifier), and the histogram and entropy of the predicted classes.

Text (a spec with a vocabulary): ``text_chars`` characters are generated and compared with the training
text: the share of generated words that are training words, and the share of generated
``copy_length``-character strings that occur verbatim in the training text (copying).
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from genlab.checks import positive_int
from genlab.data.spec import CharVocab
from genlab.errors import ConfigError
from genlab.evaluation.context import Context, Outcome, to_levels
from genlab.evaluation.features import feature_network, num_features_of, settings

#: salts of the seeded choices (added to ``ctx.seed``)
SALT_REAL, SALT_KID, SALT_TEXT = 101, 202, 303
#: images in a sample grid
GRID = 64
WORD = re.compile(r"[^\W\d_]+")  # runs of letters (any script)


@dataclass(frozen=True)
class SampleSettings:
    """``evaluation.samples``, checked (see :func:`sample_settings`)."""

    num_samples: int
    kid_subset_size: int
    kid_subsets: int
    text_chars: int
    copy_length: int


def sample_settings(ctx: Context) -> SampleSettings:
    """Check ``evaluation.samples``. Raises: ConfigError naming the key, for a non-positive integer."""
    s = ctx.section("samples")
    defaults = {"num_samples": 1000, "kid_subset_size": 50, "kid_subsets": 100, "text_chars": 2000, "copy_length": 20}
    return SampleSettings(**{k: positive_int(f"evaluation.samples.{k}", s.get(k, d)) for k, d in defaults.items()})


def _is_text(ctx: Context) -> bool:
    return ctx.spec.vocab is not None


def not_applicable(ctx: Context) -> str | None:
    """Why the sampling test does not apply (from the capabilities and the DataSpec), or ``None``."""
    if _is_text(ctx):
        if not (ctx.model.can("generate") or ctx.model.can("sample")):
            return "the model neither samples nor generates text"
        return None
    if not ctx.model.can("sample"):
        return "the model does not sample"
    if not ctx.is_image:
        return f"sample quality is measured on images (C, H, W) or text; these data are {ctx.spec.summary()}"
    if not ctx.labelled:
        return "unlabelled data: the feature network is a classifier"
    return None


# --- the real image sets ------------------------------------------------------------------------
def real_plan(ctx: Context, num_samples: int) -> tuple[int, str, str | None, int]:
    """How the real sets are drawn: ``(N, split_a, split_b, cap)``.

    Set A (the comparison set) comes from ``ctx.held_out()``. When that is ``test`` and a ``val`` split exists,
    set B is drawn from ``val`` (also never seen by the feature network; a model that draws from the
    training distribution is compared with ``test`` exactly as ``val`` is); otherwise A and B are two
    disjoint halves of the held-out split (``split_b`` is ``None``). ``cap`` is the most images per set the
    data allow, and ``N = min(num_samples, cap)``.
    """
    held = ctx.held_out()
    n_held = len(ctx.split(held)[0]) if ctx.has_split(held) else 0
    if held == "test" and ctx.has_split("val"):
        cap, other = min(n_held, len(ctx.split("val")[0])), "val"
    else:
        cap, other = n_held // 2, None
    return min(num_samples, cap), held, other, cap


def real_sets(ctx: Context, n: int) -> tuple[torch.Tensor, torch.Tensor, str]:
    """The two disjoint real sets ``(A, B)``, each ``(n, C, H, W)`` on the level grid, and how they were drawn.

    Seeded random subsets (``ctx.generator``); see :func:`real_plan`.
    """
    _, held, other, _ = real_plan(ctx, n)
    xa = to_levels(ctx.split(held)[0], ctx.spec)
    g = ctx.generator(SALT_REAL)
    if other is not None:
        xb = to_levels(ctx.split(other)[0], ctx.spec)
        a = xa[torch.randperm(len(xa), generator=g)[:n]]
        b = xb[torch.randperm(len(xb), generator=g)[:n]]
        how = f"{held} vs {other}: {n} random images of each (seeded); the feature network trained on train only"
    else:
        perm = torch.randperm(len(xa), generator=g)
        a, b = xa[perm[:n]], xa[perm[n : 2 * n]]
        how = f"two disjoint random halves of {held}: {n} images each (seeded); the feature network trained on train"
    return a, b, how


def check(ctx: Context) -> None:
    """Refuse impossible settings before any image passes through the feature network.

    Raises:
        ConfigError: for non-positive settings; when ``kid_subset_size`` exceeds ``N``; when ``N`` is not larger
            than the feature dimension (``2 * evaluation.features.width``; FID's covariance would be singular).
    """
    s = sample_settings(ctx)
    if not_applicable(ctx) or _is_text(ctx):
        return
    f = settings(ctx.section("features"))
    n, _, _, cap = real_plan(ctx, s.num_samples)
    if n < 2:
        raise ConfigError(f"the sampling test needs >= 2 held-out real images per set, the data give N={n}; "
                          "use data with a larger test/val split")  # fmt: skip
    if s.kid_subset_size > n:
        raise ConfigError(
            f"evaluation.samples.kid_subset_size={s.kid_subset_size} exceeds N={n}; lower it or raise "
            f"evaluation.samples.num_samples (N = min(num_samples={s.num_samples}, {cap} held-out images per set))"
        )
    dim = num_features_of(f.width)
    if n <= dim:
        raise ConfigError(
            f"N={n} images per set (evaluation.samples.num_samples={s.num_samples}, at most {cap} held-out) is not "
            f"more than the feature dimension {dim} (num_features = 2 x evaluation.features.width={f.width}), so "
            "FID's covariance would be singular; raise evaluation.samples.num_samples or lower "
            "evaluation.features.width"
        )


# --- the numbers --------------------------------------------------------------------------------
class AgainstReal:
    """FID and KID of one image set after another against one fixed real set, whose features are taken once
    (torchmetrics' ``reset_real_features=False``; ``reset()`` then clears only the other set).

    torchmetrics' ``FrechetInceptionDistance`` (Heusel et al. 2017; float64 statistics) and
    ``KernelInceptionDistance`` (Bińkowski et al. 2018; ``kid_subsets`` subsets of ``kid_subset_size``) with
    ``feature=net``. Both are estimates whose bias depends on ``N``; units: squared feature units.

    Args:
        net: the feature network (``num_features`` set).
        real: ``(N, C, H, W)`` real images on the level grid.
        s: the sample settings; ctx: batch size and device.
    """

    @torch.no_grad()
    def __init__(self, net: torch.nn.Module, real: torch.Tensor, s: SampleSettings, ctx: Context) -> None:
        from torchmetrics.image.fid import FrechetInceptionDistance
        from torchmetrics.image.kid import KernelInceptionDistance

        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
            # rank 0 evaluates alone: never wait for the other ranks of a DDP run (they have finished)
            alone = {"reset_real_features": False, "sync_on_compute": False}
            self.fid = FrechetInceptionDistance(feature=net, **alone).to(ctx.device)
            self.kid = KernelInceptionDistance(feature=net, subsets=s.kid_subsets, subset_size=s.kid_subset_size,
                                               **alone).to(ctx.device)  # fmt: skip
        self.ctx = ctx
        self._update(real, real=True)

    def _update(self, images: torch.Tensor, real: bool) -> None:
        for i in range(0, len(images), self.ctx.batch_size):
            b = images[i : i + self.ctx.batch_size].to(self.ctx.device, torch.float32)
            self.fid.update(b, real=real)
            self.kid.update(b, real=real)

    @torch.no_grad()
    def __call__(self, fake: torch.Tensor, salt: int) -> tuple[float, float, float]:
        """``(FID, KID mean, KID std over subsets)`` of ``fake`` ``(N, C, H, W)``; KID's subsets are drawn with the
        global generator seeded by ``ctx.seed + salt`` inside a forked RNG."""
        self._update(fake, real=False)
        value = float(self.fid.compute())
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.ctx.seed + salt)
            kid_mean, kid_std = self.kid.compute()
        self.fid.reset()
        self.kid.reset()
        return value, float(kid_mean), float(kid_std)


def fid_kid(
    net: torch.nn.Module, fake: torch.Tensor, real: torch.Tensor, s: SampleSettings, ctx: Context, salt: int
) -> tuple[float, float, float]:
    """``(FID, KID mean, KID std over subsets)`` of ``fake`` vs ``real`` images ``(N, C, H, W)`` on the level grid
    (one comparison of :class:`AgainstReal`)."""
    return AgainstReal(net, real, s, ctx)(fake, salt)


def classifier_score(probs: torch.Tensor) -> float:
    """``exp(E_x KL(p(y|x) || p(y)))`` with ``p(y) = E_x p(y|x)`` over all rows (Salimans et al. 2016, Sec. 4).

    Computed in float64 over the whole set at once (no splits), with sorted sums, so it does not depend on the
    order of the rows. Between 1 and ``K``; dimensionless.

    Args:
        probs: ``(N, K)`` class probabilities ``p(y|x)``, rows summing to 1.
    """
    p = probs.double()
    py = torch.sort(p, dim=0).values.mean(0)
    log_ratio = torch.log(p.clamp_min(1e-300)) - torch.log(py.clamp_min(1e-300))
    kl = torch.where(p > 0, p * log_ratio, torch.zeros_like(p)).sum(1)
    return math.exp(float(torch.sort(kl).values.mean()))


def class_stats(probs: torch.Tensor) -> tuple[list[int], float]:
    """``(histogram, entropy)`` of the predicted classes ``argmax_y p(y|x)`` of ``probs`` ``(N, K)``: counts of
    each class (list of ``K`` ints) and the entropy of their frequencies in bits (0 .. log2 K)."""
    counts = torch.bincount(probs.argmax(1), minlength=probs.shape[1])
    q = counts.double() / counts.sum().clamp_min(1)
    entropy = float(-(q[q > 0] * q[q > 0].log2()).sum())
    return [int(c) for c in counts], entropy


def _classifier_numbers(ctx: Context, net: Any, x: torch.Tensor, suffix: str) -> dict[str, Any]:
    probs = ctx.batched(lambda b: torch.softmax(net.logits(b).double(), 1), x)
    hist, entropy = class_stats(probs)
    return {f"classifier_score{suffix}": classifier_score(probs), f"class_histogram{suffix}": hist,
            f"class_entropy_bits{suffix}": entropy}  # fmt: skip


def run(ctx: Context) -> Outcome:
    """FID/KID against held-out images with their real-vs-real floors and the classifier numbers (images), or the
    word and copy rates (text). See the module docstring; the keys are listed in the project's schema."""
    if _is_text(ctx):
        return run_text(ctx)
    check(ctx)
    s = sample_settings(ctx)
    n, *_ = real_plan(ctx, s.num_samples)
    net, info = feature_network(ctx)
    real_a, real_b, how = real_sets(ctx, n)
    out = Outcome()
    m = out.metrics
    m.update(info)
    m["fid_num_samples"] = n
    m["fid_real_floor_sets"] = how
    against = AgainstReal(net, real_a, s, ctx)  # the held-out set's features, taken once for every comparison
    m["fid_real_floor"], m["kid_real_floor"], m["kid_std_real_floor"] = against(real_b, SALT_KID)
    for form in ctx.sample_forms():
        suffix = "" if form == "draw" else f"_{form}"
        x = to_levels(ctx.samples(n, form), ctx.spec)
        m[f"fid{suffix}"], m[f"kid{suffix}"], m[f"kid_std{suffix}"] = against(x, SALT_KID)
        m.update(_classifier_numbers(ctx, net, x, suffix))
        if ctx.cfg.get("figures"):
            from genlab.utils.images import save_grid

            path = ctx.figure(f"samples_{form}")
            save_grid(x[:GRID].float() / 255, path, nrow=int(math.ceil(math.sqrt(min(GRID, len(x))))), padding=1)
            out.figures[f"samples_{form}"] = path
    return out


# --- text ---------------------------------------------------------------------------------------
def words(text: str) -> list[str]:
    """The words of ``text``: maximal runs of letters (any script; digits and ``_`` split), lower-cased."""
    return WORD.findall(text.lower())


def _codes(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)


def window_hashes(text: str, length: int) -> np.ndarray:
    """A 64-bit polynomial hash of every ``length``-character substring of ``text`` (at every start): ``(n - length
    + 1,)`` uint64, arithmetic modulo ``2**64`` (equal strings have equal hashes)."""
    c = _codes(text)
    m = len(c) - length + 1
    if m <= 0:
        return np.zeros(0, dtype=np.uint64)
    base = np.uint64(1_000_003)
    h = np.zeros(m, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(length):
            h = h * base + c[j : j + m]
    return h


def text_metrics(
    pieces: list[str], train_text: str, copy_length: int, cache: dict[Any, Any] | None = None
) -> dict[str, Any]:
    """Word and copy rates of generated ``pieces`` (words and substrings never cross a piece boundary).

    ``valid_word_rate``: share of generated words (:func:`words`, counted with repeats) that occur among the words of
    ``train_text``. ``copy_rate``: share of the generated ``copy_length``-character substrings, one at every start
    position, that occur verbatim in ``train_text`` (hashes find candidates, each match is confirmed by a string
    search, so the rate is exact). Both exact fractions of this sample (NaN when it has no word / no substring).
    ``text_num_chars`` and ``text_num_words`` count the sample. ``cache`` keeps the training words and hashes.
    """
    cache = {} if cache is None else cache
    if ("words",) not in cache:
        cache[("words",)] = set(words(train_text))
    if ("hashes", copy_length) not in cache:
        cache[("hashes", copy_length)] = np.sort(window_hashes(train_text, copy_length))
    vocab, train_h = cache[("words",)], cache[("hashes", copy_length)]
    gen_words = [w for p in pieces for w in words(p)]
    found = sum(1 for w in gen_words if w in vocab)
    total = copies = 0
    confirmed: dict[str, bool] = {}
    for p in pieces:
        h = window_hashes(p, copy_length)
        total += len(h)
        at = np.searchsorted(train_h, h).clip(max=max(len(train_h) - 1, 0))
        hit = train_h[at] == h if len(train_h) else np.zeros(len(h), dtype=bool)
        for i in np.flatnonzero(hit):
            sub = p[i : i + copy_length]
            if sub not in confirmed:
                confirmed[sub] = sub in train_text
            copies += confirmed[sub]
    return {
        "valid_word_rate": found / len(gen_words) if gen_words else math.nan,
        "copy_rate": copies / total if total else math.nan,
        "text_num_chars": sum(len(p) for p in pieces),
        "text_num_words": len(gen_words),
    }


@torch.no_grad()
def generate_text(ctx: Context, num_chars: int) -> list[str]:
    """``num_chars`` characters from the model, seeded by ``ctx.seed``: one continuation of a newline (or of token
    0 when the vocabulary has none) for a model that ``generate``s, else ``model.sample`` windows (one piece
    each)."""
    vocab = CharVocab(ctx.spec.vocab)
    model = ctx.model
    with torch.random.fork_rng(devices=[ctx.device] if ctx.device.type == "cuda" else []):
        torch.manual_seed(ctx.seed + SALT_TEXT)
        if model.can("generate"):
            start = ctx.spec.vocab.index("\n") if "\n" in vocab else 0
            prompt = torch.full((1, 1), start, dtype=torch.long, device=ctx.device)
            g = torch.Generator(device=ctx.device).manual_seed(ctx.seed + SALT_TEXT)
            ids = model.generate(prompt, num_chars, generator=g)[0, 1:].cpu()
            return [vocab.decode(ids)]
        window, parts, left = ctx.spec.shape[0], [], num_chars
        while left > 0:
            b = min(ctx.batch_size, math.ceil(left / window))
            for row in model.sample(b).cpu():
                parts.append(vocab.decode(row[:left]))
                left -= len(parts[-1])
        pieces = parts
        return pieces


def run_text(ctx: Context) -> Outcome:
    """``valid_word_rate``, ``copy_rate``, ``text_num_chars``, ``text_num_words`` of ``text_chars`` generated
    characters against the training text (:func:`text_metrics`)."""
    s = sample_settings(ctx)
    pieces = generate_text(ctx, s.text_chars)
    key = ("text_train",)
    if key not in ctx._cache:
        ctx._cache[key] = (ctx.text("train"), {})
    train, cache = ctx._cache[key]
    return Outcome(metrics=text_metrics(pieces, train, s.copy_length, cache))
