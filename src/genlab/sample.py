"""Sample a trained checkpoint: ``python -m genlab.sample ckpt_path=<file>.ckpt num_samples=64 seed=1``.

Image data: writes ``samples.png`` (a torchvision grid) and ``samples.pt`` (the tensor
``(num_samples, *shape)`` in the data's value space) into ``outputs/sample/runs/<timestamp>/``.

Text data (a checkpoint whose ``DataSpec`` has a vocabulary, e.g. ``model=gpt data=shakespeare``):
continues ``prompt`` by ``max_new_tokens`` characters, ``num_samples`` times (default 1), with
``temperature`` / ``top_k`` / ``top_p``; prints the text and writes it to ``samples.txt`` (samples
separated by a dashed line) and the token ids to ``samples.pt``. The vocabulary comes from the
checkpoint alone. The same ``seed`` gives the same text.

Classifier guidance (``guidance=classifier condition=[3]``): class-conditional images from an
unconditional model by Bayes' rule, ``P(x | y) ∝ P(y | x) P(x)`` (:mod:`genlab.evaluation.guidance`):
``num_candidates`` draws are weighted by the genlab feature network's ``P(y | x)`` (trained on the
checkpoint's training data, or loaded from ``evaluation.features.cache_dir``) and resampled; the effective
sample size of each label is printed and written to ``guidance.json``. A class-conditional model
(``model.conditional=true``) samples ``P(x | y)`` itself: ``guidance=classifier`` is refused for it.
"""

from __future__ import annotations

import json
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from genlab.checks import positive_int
from genlab.data.spec import CharVocab
from genlab.errors import ConfigError
from genlab.models.base import GenerativeModel
from genlab.utils.checkpoint import build_datamodule, load_model
from genlab.utils.images import save_grid
from genlab.utils.runs import output_dir, run_cli

IMAGE_SAMPLES, TEXT_SAMPLES = 64, 1
SEPARATOR = "\n" + "-" * 40 + "\n"


def prompt_ids(vocab: str, prompt: Any) -> torch.Tensor:
    """Token ids ``(P,)`` of ``prompt`` under the character vocabulary ``vocab``.

    An empty or missing prompt is a newline. The two characters ``\\n`` stand for a newline (so a
    prompt can hold one on the command line).

    Raises:
        ConfigError: listing the prompt characters outside the vocabulary (or when an empty prompt
            needs a newline the vocabulary lacks).
    """
    text = "" if prompt is None else str(prompt).replace("\\n", "\n")
    chars = CharVocab(vocab)
    if not text and "\n" not in chars:
        raise ConfigError(f"the model's vocabulary has no newline to start from: give a prompt (vocabulary {vocab!r})")
    text = text or "\n"
    unknown = chars.unknown(text)
    if unknown:
        shown = ", ".join(repr(c) for c in unknown)
        raise ConfigError(
            f"prompt characters not in the model's vocabulary: {shown}. The vocabulary ({len(chars)} "
            f"characters) is {vocab!r}"
        )
    return chars.encode(text)


def _number(name: str, value: Any, kind: type) -> Any:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{name} must be a number or null, got {value!r}")
    return kind(value)


def draw_text(cfg: DictConfig, model: GenerativeModel, device: str) -> torch.Tensor:
    """Continue ``cfg.prompt`` by ``cfg.max_new_tokens`` tokens, ``num_samples`` times; returns ``(N, P + M)`` ids.

    Raises:
        ConfigError: for unknown prompt characters, ``max_new_tokens < 1``, ``top_k < 1``, ``top_p``
            outside ``(0, 1]``, or a model that cannot continue a prompt.
    """
    if not model.can("generate"):
        raise ConfigError(f"{type(model).__name__} cannot continue a prompt (it does not declare 'generate')")
    n = TEXT_SAMPLES if cfg.get("num_samples") is None else cfg.num_samples
    max_new = positive_int("max_new_tokens", cfg.get("max_new_tokens"))
    temperature = _number("temperature", cfg.get("temperature", 1.0), float)
    top_k = _number("top_k", cfg.get("top_k"), int)
    top_p = _number("top_p", cfg.get("top_p"), float)
    if top_k is not None and top_k < 1:
        raise ConfigError(f"top_k must be >= 1 or null, got {top_k} (values above the vocabulary size are clamped)")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ConfigError(f"top_p must be in (0, 1] or null, got {top_p}")
    if cfg.get("condition") is not None:
        raise ConfigError("condition applies to class-conditional image models; this text model is unconditional")
    vocab = model.spec.vocab
    ids = prompt_ids(vocab, cfg.get("prompt"))
    generator = torch.Generator(device=device).manual_seed(int(cfg.seed))
    with torch.no_grad():
        out = model.generate(ids.expand(n, -1), max_new, temperature=1.0 if temperature is None else temperature,
                             top_k=top_k, top_p=top_p, generator=generator).cpu()  # fmt: skip
    texts = [CharVocab(vocab).decode(row) for row in out]
    folder = output_dir()
    torch.save(out, folder / "samples.pt")
    (folder / "samples.txt").write_text(SEPARATOR.join(texts) + "\n", encoding="utf-8")
    print(SEPARATOR.join(texts))
    print(f"text: {folder / 'samples.txt'} ({n} x {out.shape[1]} characters, prompt {len(ids)})")
    return out


def condition_labels(cfg: DictConfig, num_samples: int) -> torch.Tensor | None:
    """``cfg.condition`` (a label or a list of labels) cycled to ``(num_samples,)`` int64, or ``None``."""
    if cfg.get("condition") is None:
        return None
    labels = OmegaConf.to_container(cfg.condition) if OmegaConf.is_config(cfg.condition) else cfg.condition
    labels = torch.as_tensor(labels, dtype=torch.long).flatten()
    if len(labels) == 0:
        raise ConfigError("condition must name at least one class label, e.g. condition=3 or condition=[3,5]")
    return labels.repeat(num_samples // len(labels) + 1)[:num_samples]


def guided(cfg: DictConfig, model: GenerativeModel, labels: torch.Tensor, device: str) -> torch.Tensor:
    """Classifier-guided samples ``(len(labels), *shape)`` on the CPU, ``labels[i]`` for sample ``i``.

    Builds the checkpoint's DataModule (``data_dir`` replaced when given), gets the feature network
    (:func:`genlab.evaluation.features.feature_network`, settings ``cfg.evaluation.features``) and resamples
    ``cfg.num_candidates`` candidates per label (:func:`genlab.evaluation.guidance.guided_samples`), seeded by
    ``cfg.seed``. Prints the effective sample size of every label.

    Raises:
        ConfigError: for data that differ from the model's, unlabelled data, or what ``guided_samples`` refuses.
    """
    from genlab.evaluation.context import Context
    from genlab.evaluation.features import feature_network
    from genlab.evaluation.guidance import guided_samples

    dm = build_datamodule(cfg.ckpt_path, cfg.get("data_dir"))
    if dm.spec != model.spec:
        raise ConfigError(f"the checkpoint's data ({dm.spec.summary()}) differ from the model's "
                          f"({model.spec.summary()}); check data_dir")  # fmt: skip
    if not model.spec.num_classes:
        raise ConfigError("guidance=classifier needs labelled data: the feature network is a classifier")
    evaluation = OmegaConf.to_container(cfg.evaluation, resolve=True)
    ctx = Context(model, dm, evaluation, output_dir(), seed=int(cfg.seed), device=device)
    net, info = feature_network(ctx)
    how = "loaded from the cache" if info["feature_net_cached"] else "trained"
    print(f"feature network: {how} in {info['feature_net_seconds']:.1f}s, held-out accuracy "
          f"{info['feature_net_test_accuracy']:.4f}")  # fmt: skip
    generator = torch.Generator().manual_seed(int(cfg.seed))
    x: torch.Tensor | None = None
    ess: dict[str, float] = {}
    for label in dict.fromkeys(labels.tolist()):  # each label once, in first-seen order
        where = (labels == label).nonzero().flatten()
        xs, ess[str(label)] = guided_samples(model, net, int(label), len(where), cfg.num_candidates, generator,
                                             batch_size=ctx.batch_size)  # fmt: skip
        x = torch.empty(len(labels), *xs.shape[1:], dtype=xs.dtype) if x is None else x
        x[where] = xs
        print(f"label {label}: effective sample size {ess[str(label)]:.1f} of {cfg.num_candidates} candidates")
    (output_dir() / "guidance.json").write_text(
        json.dumps({"num_candidates": cfg.num_candidates, "effective_sample_size": ess}, indent=2) + "\n"
    )
    return x


def draw(cfg: DictConfig) -> torch.Tensor:
    """Draw ``cfg.num_samples`` samples with seed ``cfg.seed``; returns them on the CPU.

    Text checkpoints (a vocabulary in the model's ``DataSpec``) go to :func:`draw_text`.

    Raises:
        ConfigError: for ``num_samples <= 0``, an unknown device, or a model that cannot sample; for
            ``guidance`` other than ``null``/``classifier``, and for ``guidance=classifier`` without a
            ``condition``, with a text model, a model that cannot sample or a class-conditional one.
    """
    num_samples = cfg.get("num_samples")
    if num_samples is not None:
        positive_int("num_samples", num_samples)
    model = load_model(cfg.ckpt_path, **OmegaConf.to_container(cfg.model_overrides, resolve=True))
    guidance = cfg.get("guidance")
    if guidance not in (None, "classifier"):
        raise ConfigError(f"guidance must be null or classifier, got {guidance!r}")
    if guidance == "classifier":
        if not model.can("sample"):
            raise ConfigError(f"guidance=classifier needs a model that samples; {type(model).__name__} cannot sample")
        if model.spec.vocab is not None:
            raise ConfigError("guidance=classifier applies to image models of labelled data, not text models")
        if model.can("conditional"):
            raise ConfigError(f"{type(model).__name__} is class-conditional and samples P(x|y) itself: "
                              "drop guidance=classifier")  # fmt: skip
        if cfg.get("condition") is None:
            raise ConfigError("guidance=classifier needs the class to condition on: condition=3 or condition=[3,5]")
    if not model.can("sample"):
        raise ConfigError(f"{type(model).__name__} cannot sample")
    device = cfg.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda"):
        raise ConfigError(f"device must be cpu, cuda or auto, got {device!r}")
    model = model.to(device).eval()
    torch.manual_seed(cfg.seed)
    if model.spec.vocab is not None:
        return draw_text(cfg, model, device)
    if cfg.get("prompt") is not None:
        raise ConfigError("prompt applies to text models only (this checkpoint's data have no vocabulary)")
    num_samples = IMAGE_SAMPLES if num_samples is None else num_samples
    condition = condition_labels(cfg, num_samples)  # class label(s) for class-conditional models (or guidance)
    if guidance == "classifier":
        x = guided(cfg, model, condition, device)
    else:
        with torch.no_grad():
            x = model.sample(num_samples, condition=None if condition is None else condition.to(device)).cpu()
    out = output_dir()
    torch.save(x, out / "samples.pt")
    print(f"samples: {out / 'samples.pt'} {tuple(x.shape)}")
    if len(model.spec.shape) == 3:
        save_grid(x, out / "samples.png", nrow=cfg.nrow)
        print(f"grid: {out / 'samples.png'}")
    return x


@hydra.main(version_base="1.3", config_path="../../conf", config_name="sample")
def main(cfg: DictConfig) -> None:
    """Console entry point (``genlab-sample``); see :func:`draw`."""
    run_cli(draw, cfg)


if __name__ == "__main__":
    main()
