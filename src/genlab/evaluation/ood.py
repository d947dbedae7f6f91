"""Out-of-distribution detection by likelihood: does ``log p(x)`` rank the model's own data above others?

For each outlier set, the AUROC of ``log_prob`` with the in-distribution held-out split as positives
and the outlier set as negatives: the probability that a random held-out image scores higher than a
random outlier (ties count one half). 1 separates perfectly, 0.5 is chance, and below 0.5 the model
finds the outliers *more* likely, the known failure of likelihood models (Nalisnick et al. 2019, "Do
deep generative models know what they don't know?": Glow, PixelCNN and VAEs trained on
Fashion-MNIST score MNIST higher); the number is reported whichever way it comes out.

Outlier sets: transforms of the held-out split (``ood.transforms``) and the test split of another
DataModule of the same shape (``ood.data``, a ``conf/data/<name>.yaml``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from genlab.data.spec import REPRESENTATION_OF, DataSpec
from genlab.errors import ConfigError, GenlabError
from genlab.evaluation.context import Context, Outcome

TRANSFORMS = ("inverted", "vflip", "pixel_shuffle", "uniform_noise")
#: the data.representation that gives each DataSpec.kind
REPRESENTATION_FOR_KIND = {kind: setting.split("=")[1] for kind, setting in REPRESENTATION_OF.items()}
#: generator salts of the random transforms (distinct from the other tests' salts)
SALT = {"pixel_shuffle": 401, "uniform_noise": 402}


# --- outlier sets --------------------------------------------------------------------------------
def transform(name: str, x: torch.Tensor, spec: DataSpec, generator: torch.Generator) -> torch.Tensor:
    """An outlier set made from held-out images ``x`` ``(N, C, H, W)`` in the data's value space.

    * ``inverted``: ``1 - x`` (levels ``k/(L-1)`` to ``(L-1-k)/(L-1)``; binary ``{0, 1}`` swapped); for
      dequantized ``(k + u)/L`` the level is inverted and the noise kept, ``(L - 1 - k + u)/L``, so
      values stay in ``[0, 1)``;
    * ``vflip``: the rows in reverse order (flip along H);
    * ``pixel_shuffle``: each image's pixels (all channels of a pixel together) moved by its own
      random permutation, drawn from ``generator``: the same values, no spatial structure;
    * ``uniform_noise``: independent uniform values of the value space, from ``generator``: levels
      ``randint(L)/(L-1)``, dequantized ``U[0, 1)``, binary ``Bernoulli(0.5)``.

    Returns:
        ``(N, C, H, W)`` float32. Raises: ConfigError for an unknown name.
    """
    x = x.float()
    if name == "inverted":
        if spec.kind == "dequantized":
            scaled = x * spec.levels
            k = torch.floor(scaled).clamp_(0, spec.levels - 1)
            return (spec.levels - 1 - k + (scaled - k)) / spec.levels
        if spec.kind == "levels":  # on the grid exactly: the level k becomes L - 1 - k
            top = spec.levels - 1
            return (top - torch.round(x * top).clamp_(0, top)) / top
        return 1.0 - x
    if name == "vflip":
        return x.flip(-2)
    if name == "pixel_shuffle":
        n, c, h, w = x.shape
        perm = torch.rand(n, h * w, generator=generator).argsort(1)
        return x.flatten(2).gather(2, perm[:, None, :].expand(n, c, h * w)).view_as(x)
    if name == "uniform_noise":
        if spec.kind == "levels":
            return torch.randint(spec.levels, x.shape, generator=generator).float() / (spec.levels - 1)
        if spec.kind == "dequantized":
            return torch.rand(x.shape, generator=generator)
        return torch.bernoulli(torch.full(x.shape, 0.5), generator=generator)
    raise ConfigError(f"unknown evaluation.ood.transforms entry {name!r}; choose from {list(TRANSFORMS)}")


def conf_dir() -> Path:
    """The ``conf/`` folder of the source checkout (``<repo>/conf``, two levels above the package).

    Raises:
        ConfigError: when it is not there (an installed package without the configs).
    """
    import genlab

    path = Path(genlab.__file__).resolve().parents[2] / "conf"
    if not (path / "data").is_dir():
        raise ConfigError(
            f"evaluation.ood.data needs the data configs of conf/data, not found at {path / 'data'}; "
            "run from a source checkout of genlab, or set evaluation.ood.data=null"
        )
    return path


def data_names() -> list[str]:
    """The data configs, ``conf/data/<name>.yaml``, by name. Raises: ConfigError (:func:`conf_dir`)."""
    return sorted(p.stem for p in (conf_dir() / "data").glob("*.yaml"))


def outlier_datamodule(ctx: Context, name: str, need_files: bool = True) -> Any:
    """The DataModule of ``conf/data/<name>.yaml``, built like the model's data, not set up.

    Its ``data_dir`` is ``ood.data_dir``, else ``ctx.cfg["data_dir"]`` (the run's ``paths.data_dir``);
    ``seed`` is ``ctx.seed``; ``representation`` follows the model's ``DataSpec.kind``, and ``binarize``
    and ``threshold`` are copied from ``ctx.datamodule`` when it has them. Built with
    ``hydra.utils.instantiate``.

    Args:
        need_files: refuse a config with a ``data_dir`` when no folder is set; ``False`` builds it with
            a placeholder folder and downloads off, enough for its ``spec`` (which image sets know
            before reading any file).

    Raises:
        ConfigError: for an unknown name (the choices are listed), or no data folder to read it from.
    """
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    names = data_names()
    if name not in names:
        raise ConfigError(f"unknown evaluation.ood.data={name!r}; choose one of {names} (conf/data)")
    data_dir = ctx.section("ood").get("data_dir") or ctx.cfg.get("data_dir")
    node = OmegaConf.load(conf_dir() / "data" / f"{name}.yaml")
    if "data_dir" in node and not data_dir:
        if need_files:
            raise ConfigError(f"evaluation.ood.data={name} needs a data folder: set evaluation.ood.data_dir")
        data_dir = "."
    root = OmegaConf.create({"paths": {"data_dir": str(data_dir or "")}, "seed": ctx.seed, "data": node})
    cfg = OmegaConf.to_container(root, resolve=True)["data"]
    if "data_dir" in cfg:
        cfg["data_dir"] = str(data_dir)
    if not need_files and "download" in cfg:
        cfg["download"] = False
    if "representation" in cfg:
        cfg["representation"] = REPRESENTATION_FOR_KIND[ctx.spec.kind]
    for key in ("binarize", "threshold"):
        if key in cfg and hasattr(ctx.datamodule, key):
            cfg[key] = getattr(ctx.datamodule, key)
    return instantiate(cfg)


def same_space(name: str, spec: DataSpec, mine: DataSpec) -> None:
    """Refuse an outlier set the model cannot score: another shape, value kind or number of levels.

    Raises:
        ConfigError: one line naming both and the fix.
    """
    if spec.vocab is not None or spec.shape != mine.shape:
        raise ConfigError(
            f"evaluation.ood.data={name} has shape {spec.shape}; the model's data have {mine.shape}: "
            "choose a data set of the same shape"
        )
    if (spec.kind, spec.levels) != (mine.kind, mine.levels):
        raise ConfigError(
            f"evaluation.ood.data={name} has {spec.levels} {spec.kind} levels; the model's data have {mine.levels} "
            f"{mine.kind}: choose a data set with the same value space"
        )


def settings(ctx: Context) -> tuple[list[str], str | None]:
    """``(ood.transforms, ood.data)``, checked. Raises: ConfigError for an unknown transform (choices listed)."""
    section = ctx.section("ood")
    names = list(section.get("transforms") or [])
    unknown = [t for t in names if t not in TRANSFORMS]
    if unknown:
        raise ConfigError(f"unknown evaluation.ood.transforms {unknown}; choose from {list(TRANSFORMS)}")
    return names, section.get("data") or None


def check(ctx: Context) -> None:
    """Refuse impossible settings before any work (reads no image file and downloads nothing; a text
    source reads its file, if present, to know its shape).

    Raises:
        ConfigError: an unknown transform; an unknown ``ood.data`` (the names of ``conf/data`` listed);
            an ``ood.data`` of another shape or value space than the model's data; an ``ood.data`` with
            no data folder (neither ``ood.data_dir`` nor the run's ``data_dir``).
    """
    _, name = settings(ctx)
    if name is None:
        return
    try:
        spec = outlier_datamodule(ctx, name, need_files=False).spec
    except ConfigError:
        raise
    except GenlabError as e:  # a source that knows its shape only from its files (text)
        raise ConfigError(
            f"evaluation.ood.data={name} does not describe its shape without reading its files ({type(e).__name__}); "
            f"choose an image data set of the model's shape {ctx.spec.shape}"
        ) from e
    same_space(name, spec, ctx.spec)
    outlier_datamodule(ctx, name)  # a folder to read it from


def not_applicable(ctx: Context) -> str | None:
    """Why the test does not apply: no ``log_prob``, data that are not images, or no outlier set."""
    if not ctx.model.can("log_prob"):
        return "no likelihood: the model does not declare log_prob (the test ranks by log p(x))"
    if not ctx.is_image:
        return "the outlier sets are image transforms and image data sets; the data are not images"
    names, name = settings(ctx)
    if not names and name is None:
        return "no outlier set: evaluation.ood.transforms is empty and evaluation.ood.data is null"
    return None


# --- the number ----------------------------------------------------------------------------------
def auroc(inside: torch.Tensor, outside: torch.Tensor) -> float:
    """AUROC of scores with ``inside`` ``(N,)`` the positives and ``outside`` ``(M,)`` the negatives.

    torchmetrics' ``binary_auroc`` (exact, no thresholds) on the scores' ranks: torchmetrics passes
    values outside ``[0, 1]`` through a sigmoid, which saturates for log-likelihoods of hundreds of nats
    and would tie them; ranks scaled to ``[0, 1]`` keep the order and the ties exactly, and the AUROC
    depends on the order only. NaN scores rank lowest (as ``-inf``).

    Returns:
        The AUROC in ``[0, 1]``, exact for these scores. Raises: ValueError for an empty set.
    """
    from scipy.stats import rankdata
    from torchmetrics.functional.classification import binary_auroc

    if not len(inside) or not len(outside):
        raise ValueError("the AUROC needs at least one in-distribution and one outlier score")
    scores = torch.nan_to_num(torch.cat([inside, outside]).double(), nan=-torch.inf)
    ranks = torch.from_numpy(rankdata(scores.numpy(), method="average"))
    preds = (ranks - 1) / max(len(ranks) - 1, 1)
    target = torch.cat([torch.ones(len(inside)), torch.zeros(len(outside))]).long()
    return float(binary_auroc(preds, target))


def scores(ctx: Context, x: torch.Tensor) -> torch.Tensor:
    """``log_prob`` of ``x`` ``(M, *shape)`` in batches, seeded like ``ctx.log_probs``: ``(M,)`` float64 nats."""
    with torch.random.fork_rng(devices=[ctx.device] if ctx.device.type == "cuda" else []):
        torch.manual_seed(ctx.seed)
        return ctx.batched(ctx.model.log_prob, x).double()


def run(ctx: Context) -> Outcome:
    """Score the held-out split and every outlier set.

    Returns:
        Metrics ``ood_auroc_<transform>`` and ``ood_auroc_<data name>`` (AUROC in ``[0, 1]``, exact for
        the held-out split and the outlier set, of sizes ``N`` and ``M``), ``ood_split``,
        ``ood_num_examples`` (``N``; every transform set has ``M = N``) and ``ood_num_<data name>``
        (``M`` of the data set); table
        ``ood_log_prob`` (set, count, mean ``log_prob`` in nats per example, AUROC), whose first row is
        the held-out split itself.

    Raises:
        ConfigError: for an unknown transform or data set, or one of another shape.
        DataError: when the files of ``ood.data`` are missing (and cannot be downloaded) or corrupt.
    """
    names, data_name = settings(ctx)
    split = ctx.held_out()
    x_in = ctx.split(split)[0]
    lp_in = ctx.log_probs(split)
    sets: list[tuple[str, torch.Tensor]] = []
    for name in names:
        sets.append((name, transform(name, x_in, ctx.spec, ctx.generator(SALT.get(name, 400)))))
    if data_name is not None:
        dm = outlier_datamodule(ctx, data_name)
        same_space(data_name, dm.spec, ctx.spec)
        dm.prepare_data()
        sets.append((data_name, dm.split_tensors("test")[0]))
        metrics_extra = {f"ood_num_{data_name}": len(sets[-1][1])}
    else:
        metrics_extra = {}
    metrics: dict[str, Any] = {"ood_split": split, "ood_num_examples": len(lp_in)}
    rows = [[split, len(lp_in), float(lp_in.mean()), None]]
    for name, x_out in sets:
        lp_out = scores(ctx, x_out)
        metrics[f"ood_auroc_{name}"] = auroc(lp_in, lp_out)
        rows.append([name, len(lp_out), float(lp_out.mean()), metrics[f"ood_auroc_{name}"]])
    metrics.update(metrics_extra)
    table = (["set", "count", "mean_log_prob_nats", "auroc"], rows)
    return Outcome(metrics=metrics, tables={"ood_log_prob": table})
