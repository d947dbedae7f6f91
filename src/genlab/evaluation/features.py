"""The feature network of FID, KID, the classifier score and classifier guidance, trained by genlab itself.

Sample-quality numbers compare images through a feature network. The usual one is an Inception-v3
trained on ImageNet (Heusel et al. 2017; Bińkowski et al. 2018; Salimans et al. 2016), which is
neither available offline nor meaningful on 8x8 digits. genlab instead trains a small CNN classifier
(:class:`FeatureNet`) on the **training split** of the dataset under evaluation (its images mapped to
the level grid with :func:`~genlab.evaluation.context.to_levels`, and its labels), once per dataset
and setting, and caches its weights under ``evaluation.features.cache_dir``. Its numbers therefore
compare between models of one dataset and one feature setting, not with published FIDs.

The cache file's name holds a SHA-256 key of everything the weights depend on: the
:class:`~genlab.data.spec.DataSpec` (shape, levels, classes; not the kind: levels and dequantized data give the
same level-grid images), a hash of the training split's
content (its level indices and labels), the split name, the source code of :class:`FeatureNet` and of
the training loop, and the settings (``width``, ``epochs``, ``batch_size``, ``lr``, ``seed``). Writes are
atomic (a temporary file in the same folder, then ``os.replace``), so parallel jobs that race both
leave a valid file; a file that cannot be read is reported with one warning and retrained.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from genlab.checks import positive, positive_int
from genlab.errors import ConfigError
from genlab.evaluation.context import Context, to_levels
from genlab.utils.files import atomic_save

#: bump when the file layout changes (part of the cache key)
CACHE_FORMAT = 2
#: the split the network trains on
TRAIN_SPLIT = "train"


def num_features_of(width: int) -> int:
    """The feature dimension of a :class:`FeatureNet` of conv width ``width``: ``2 * width``."""
    return 2 * int(width)


class FeatureNet(nn.Module):
    """A small CNN classifier whose penultimate layer gives the features of FID/KID.

    Layers: ``conv3x3(C -> w)`` (stride 1 for images of side <= 16, else 2), ReLU, ``conv3x3(w -> 2w,
    stride 2)``, ReLU, ``conv3x3(2w -> 2w, stride 2)``, ReLU, adaptive average pooling to ``2 x 2``, a
    linear layer to ``num_features = 2w`` units ``h``, then ReLU and a linear layer to the class logits
    (:meth:`logits`). The features (:meth:`forward`) are ``h`` standardised by one affine map fixed after
    training, ``(h - mean) / scale`` with the training split's mean and ``scale`` the root of its average
    per-unit variance, so feature units are comparable across datasets and KID's polynomial kernel
    ``(x.y / d + 1)^3`` sees values of order one (the buffers ``feature_mean``, ``feature_scale``; identity until
    :meth:`standardize` sets them). No batch norm or dropout, so train and eval modes compute the same
    function. Inputs are images on the data's level grid in ``[0, 1]`` (centred to ``[-0.5, 0.5]`` inside).

    Args:
        shape: ``(C, H, W)`` of the images it is built for.
        num_classes: number of classes ``K`` (>= 2).
        width: conv width ``w`` (``evaluation.features.width``).

    Raises:
        ConfigError: for a shape that is not ``(C, H, W)``, fewer than 2 classes or a non-positive width.
    """

    def __init__(self, shape: tuple[int, ...], num_classes: int, width: int = 32) -> None:
        super().__init__()
        if len(shape) != 3:
            raise ConfigError(f"the feature network takes images (C, H, W), got data of shape {tuple(shape)}")
        if not num_classes or num_classes < 2:
            raise ConfigError(f"the feature network is a classifier of >= 2 classes, got num_classes={num_classes}")
        w = positive_int("evaluation.features.width", width)
        c, h, wd = (int(s) for s in shape)
        first_stride = 1 if min(h, wd) <= 16 else 2
        self.shape = (c, h, wd)
        self.num_classes = int(num_classes)
        #: the feature dimension (torchmetrics reads it instead of probing with a 3x299x299 image)
        self.num_features = num_features_of(w)
        self.body = nn.Sequential(
            nn.Conv2d(c, w, 3, first_stride, 1),
            nn.ReLU(),
            nn.Conv2d(w, 2 * w, 3, 2, 1),
            nn.ReLU(),
            nn.Conv2d(2 * w, 2 * w, 3, 2, 1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(2),
            nn.Flatten(),
            nn.Linear(8 * w, self.num_features),
        )
        self.head = nn.Linear(self.num_features, self.num_classes)
        self.register_buffer("feature_mean", torch.zeros(self.num_features))
        self.register_buffer("feature_scale", torch.ones(()))

    def _check(self, x: torch.Tensor) -> None:
        if tuple(x.shape[1:]) != self.shape or not x.is_floating_point():
            raise ValueError(
                f"the feature network takes float images (B, *{self.shape}) on the level grid in [0, 1], "
                f"got {x.dtype} {tuple(x.shape)}"
            )

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        """The penultimate units ``h`` ``(B, num_features)`` (before the last ReLU, not standardised).

        Raises:
            ValueError: for images of another shape than the network's, or not floats.
        """
        self._check(x)
        return self.body(x.to(self.head.weight.dtype) - 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Standardised penultimate features ``(B, num_features)`` of images ``(B, C, H, W)`` in ``[0, 1]``: what
        FID and KID compare.

        Raises:
            ValueError: for images of another shape than the network's, or not floats.
        """
        return (self.hidden(x) - self.feature_mean) / self.feature_scale

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits ``(B, K)`` of images ``(B, C, H, W)`` in ``[0, 1]``; ``softmax`` gives ``p(y | x)``."""
        return self.head(F.relu(self.hidden(x)))

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator) -> None:
        """Draw every weight and bias from ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` (PyTorch's default for conv and
        linear layers) with ``generator`` alone: seeded, and safe when threads share the global RNG."""
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                bound = 1.0 / math.sqrt(module.weight[0].numel())
                for p in (module.weight, module.bias):
                    p.copy_(torch.empty(p.shape).uniform_(-bound, bound, generator=generator))

    @torch.no_grad()
    def standardize(self, x: torch.Tensor, batch_size: int = 512) -> None:
        """Set ``feature_mean`` and ``feature_scale`` from images ``x`` ``(N, C, H, W)`` (the training split), in
        float64: afterwards the features of ``x`` have mean 0 and average per-unit variance 1."""
        device = self.head.weight.device
        h = torch.cat([self.hidden(x[i : i + batch_size].to(device)).double() for i in range(0, len(x), batch_size)])
        mean = h.mean(0)
        scale = (h - mean).pow(2).mean(0).mean().sqrt().clamp_min(1e-12)
        self.feature_mean.copy_(mean)
        self.feature_scale.copy_(scale)


@dataclass(frozen=True)
class FeatureSettings:
    """``evaluation.features``, checked (see :func:`settings`)."""

    cache_dir: str
    width: int
    epochs: int
    batch_size: int
    lr: float
    seed: int


def settings(cfg_features: dict[str, Any]) -> FeatureSettings:
    """Check the ``evaluation.features`` section.

    Raises:
        ConfigError: naming the key, for a missing or unresolved ``cache_dir``, a non-positive ``width``,
            ``epochs``, ``batch_size`` or ``lr``, or a non-integer ``seed``.
    """
    f = dict(cfg_features or {})
    cache_dir = f.get("cache_dir")
    if not cache_dir or "${" in str(cache_dir):
        raise ConfigError(
            f"evaluation.features.cache_dir must be a folder (outside run folders), got {cache_dir!r}; "
            "e.g. evaluation.features.cache_dir=~/.cache/genlab/features"
        )
    seed = f.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"evaluation.features.seed must be an integer, got {seed!r}")
    return FeatureSettings(
        cache_dir=str(Path(str(cache_dir)).expanduser()),
        width=positive_int("evaluation.features.width", f.get("width", 32)),
        epochs=positive_int("evaluation.features.epochs", f.get("epochs", 5)),
        batch_size=positive_int("evaluation.features.batch_size", f.get("batch_size", 128)),
        lr=positive("evaluation.features.lr", f.get("lr", 2e-3)),
        seed=seed,
    )


def level_indices(x: torch.Tensor, levels: int) -> torch.Tensor:
    """Integer level indices ``round(x * (L - 1))`` of grid values ``x`` in ``[0, 1]`` (uint8 for ``L <= 256``,
    else int32)."""
    dtype = torch.uint8 if levels <= 256 else torch.int32
    return torch.round(x.float() * (levels - 1)).to(dtype)


def data_hash(x_levels: torch.Tensor, labels: torch.Tensor, levels: int) -> str:
    """SHA-256 (hex) of a split's content: its level indices (``(N, C, H, W)``, C order) and labels ``(N,)`` int64."""
    h = hashlib.sha256()
    h.update(str(tuple(x_levels.shape)).encode())
    h.update(level_indices(x_levels, levels).contiguous().numpy().tobytes())
    h.update(labels.to(torch.int64).contiguous().numpy().tobytes())
    return h.hexdigest()


def new_net(shape: tuple[int, ...], num_classes: int, width: int) -> FeatureNet:
    """A :class:`FeatureNet` built without changing the caller's global RNG state (its default initialisation is
    drawn inside a forked RNG; :func:`train_feature_net` redraws it from its own generator)."""
    with torch.random.fork_rng(devices=[]):
        return FeatureNet(shape, num_classes, width)


def train_feature_net(
    x: torch.Tensor, y: torch.Tensor, num_classes: int, s: FeatureSettings, device: torch.device | str = "cpu"
) -> FeatureNet:
    """Train a :class:`FeatureNet` by cross-entropy: Adam (``s.lr``), ``s.epochs`` passes in shuffled batches of
    ``s.batch_size`` (the last one partial), initialisation and shuffling drawn from one generator seeded by
    ``s.seed`` (never the global RNG, so the weights do not depend on other threads).

    Args:
        x: ``(N, C, H, W)`` float images on the level grid in ``[0, 1]``.
        y: ``(N,)`` int64 labels in ``[0, num_classes)``.

    Returns:
        the network on ``device``, in eval mode, without gradients, its features standardised on ``x``
        (:meth:`FeatureNet.standardize`).

    Raises:
        ConfigError: for an empty training split or labels outside ``[0, num_classes)``.
    """
    if len(x) == 0:
        raise ConfigError("the feature network needs a non-empty training split")
    y = y.long()
    if int(y.min()) < 0 or int(y.max()) >= num_classes:
        raise ConfigError(f"labels must lie in [0, {num_classes}) for the feature network, got [{int(y.min())}, "
                          f"{int(y.max())}]")  # fmt: skip
    device = torch.device(device)
    g = torch.Generator().manual_seed(s.seed)
    net = new_net(tuple(x.shape[1:]), num_classes, s.width)
    net.reset_parameters(g)
    net = net.to(device).train()
    opt = torch.optim.Adam(net.parameters(), lr=s.lr)
    n = len(x)
    for _ in range(s.epochs):
        perm = torch.randperm(n, generator=g)
        for i in range(0, n, s.batch_size):
            idx = perm[i : i + s.batch_size]
            loss = F.cross_entropy(net.logits(x[idx].to(device)), y[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    net.eval().requires_grad_(False)
    net.standardize(x)
    return net


#: SHA-256 of the source of the network and of its training loop, read once at import
CODE_HASH = hashlib.sha256((inspect.getsource(FeatureNet) + inspect.getsource(train_feature_net)).encode()).hexdigest()


def cache_key(spec_dict: dict[str, Any], content_hash: str, split: str, s: FeatureSettings) -> str:
    """SHA-256 (hex) of everything the weights depend on (see the module docstring); never the cache folder."""
    record = {
        "format": CACHE_FORMAT,
        # not the kind: the network sees level-grid images (to_levels), the same for levels and dequantized data
        "spec": {k: spec_dict[k] for k in ("shape", "levels", "num_classes", "vocab")},
        "data": content_hash,
        "split": split,
        "code": CODE_HASH,
        "settings": {k: v for k, v in asdict(s).items() if k != "cache_dir"},
    }
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()


def cache_path(cache_dir: str | Path, spec_dict: dict[str, Any], key: str) -> Path:
    """``<cache_dir>/featurenet-<C>x<H>x<W>-<levels>-<key[:20]>.pt`` (readable prefix, unique key)."""
    shape = "x".join(str(s) for s in spec_dict["shape"])
    return Path(cache_dir) / f"featurenet-{shape}-{spec_dict['levels']}-{key[:20]}.pt"


def _load_cached(path: Path, key: str, net: FeatureNet) -> bool:
    """Load ``path`` into ``net``; ``False`` when there is no file; a file that cannot be used gives one warning."""
    if not path.is_file():
        return False
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(payload, dict) or payload.get("key") != key:
            raise ValueError("its key does not match its name")
        net.load_state_dict(payload["state_dict"])
        return True
    except Exception as e:  # truncated, corrupt or foreign files: retrain, never crash, never use it
        warnings.warn(
            f"feature network cache {path} is unreadable ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
            "retraining it",
            RuntimeWarning,
            stacklevel=3,
        )
        return False


def feature_network(ctx: Context) -> tuple[FeatureNet, dict[str, Any]]:
    """The feature network of ``ctx``'s dataset: loaded from the cache, or trained and cached; cached in ``ctx``.

    Trained on ``to_levels`` of the training split with its labels (:func:`train_feature_net`); its accuracy is
    measured on the held-out split ``ctx.held_out()``, which it never trained on. The network lives on
    ``ctx.device``, in eval mode, and is never attached to the model.

    Returns:
        ``(net, info)`` with ``info``: ``feature_net_test_accuracy`` (fraction of held-out images classified
        right, exact over the whole split; NaN without held-out images), ``feature_net_cached`` (``True`` when
        loaded from the cache), ``feature_net_seconds`` (wall-clock seconds to load or train, including the
        accuracy pass).

    Raises:
        ConfigError: for unlabelled or non-image data ("unlabelled data: the feature network is a classifier"),
            or bad ``evaluation.features`` settings (:func:`settings`).
    """
    key_ctx = ("feature_network",)
    if key_ctx in ctx._cache:
        return ctx._cache[key_ctx]
    spec = ctx.spec
    if not ctx.is_image:
        raise ConfigError(f"the feature network takes images (C, H, W); these data are {spec.summary()}")
    if not ctx.labelled:
        raise ConfigError("unlabelled data: the feature network is a classifier; use labelled data")
    s = settings(ctx.section("features"))
    t0 = time.perf_counter()
    x, y = ctx.split(TRAIN_SPLIT)
    x = to_levels(x, spec)
    spec_dict = spec.to_dict()
    key = cache_key(spec_dict, data_hash(x, y, spec.levels), TRAIN_SPLIT, s)
    path = cache_path(s.cache_dir, spec_dict, key)
    net = new_net(spec.shape, spec.num_classes, s.width)
    cached = _load_cached(path, key, net)
    if cached:
        net = net.to(ctx.device).eval().requires_grad_(False)
    else:
        net = train_feature_net(x, y, spec.num_classes, s, ctx.device)
        state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
        atomic_save({"key": key, "format": CACHE_FORMAT, "spec": spec_dict, "state_dict": state}, path)
    accuracy = held_out_accuracy(ctx, net)
    info = {
        "feature_net_test_accuracy": accuracy,
        "feature_net_cached": cached,
        "feature_net_seconds": time.perf_counter() - t0,
    }
    ctx._cache[key_ctx] = (net, info)
    return net, info


def held_out_accuracy(ctx: Context, net: FeatureNet) -> float:
    """Fraction of the held-out split (``ctx.held_out()``) that ``net`` classifies right (NaN when it is empty)."""
    split = ctx.held_out()
    if not ctx.has_split(split):
        return math.nan
    x, y = ctx.split(split)
    pred = ctx.batched(lambda b: net.logits(b).argmax(1), to_levels(x, ctx.spec))
    return float((pred == y).double().mean())
