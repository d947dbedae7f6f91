"""How likely is this x? ``python -m genlab.score ckpt_path=<file>.ckpt input=<files>`` (or ``text="..."``).

``input=`` takes PNG files (one path, a comma-separated list, or a glob), a ``.pt`` tensor of images, or a
text file; ``text=`` takes a string. For each input it prints ``log p(x)`` in nats, bits/dim, and the
percentile of ``log p(x)`` among the per-example scores of the test split (the validation split when there is
none), and writes ``scores.csv`` to the run folder (``outputs/score/runs/<timestamp>/``). With
``surprisal=true``, text also gets ``surprisal.csv``: the surprisal of each character, in bits.

Image files are mapped to the data's levels, ``k = round(v / 255 * (L - 1))`` (e.g. the 17 levels of digits);
a density on dequantized data is scored at the bin midpoints ``(k + 0.5) / L``, and the output says so.
A ``.pt`` tensor is ``uint8`` pixel values (mapped like image files) or floats already in the model's
value space (as ``genlab.sample`` writes them).
"""

from __future__ import annotations

import csv
import glob
import math
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig

from genlab.data.spec import CharVocab, DataSpec
from genlab.errors import ConfigError, DataError
from genlab.evaluation.context import Context
from genlab.metrics.likelihood import bits_per_dim
from genlab.utils.checkpoint import build_datamodule, load_model
from genlab.utils.runs import output_dir, run_cli

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


def expected(spec: DataSpec) -> str:
    """What the model scores, in words, for refusals."""
    if spec.vocab is not None:
        return f"text over its vocabulary of {spec.levels} characters"
    c, h, w = spec.shape
    return f"{'grayscale' if c == 1 else f'{c}-channel'} images of {h}x{w} pixels"


def pixels_to_values(pixels: torch.Tensor, spec: DataSpec) -> tuple[torch.Tensor, str]:
    """Map 8-bit pixel values ``(N, C, H, W)`` uint8 to the model's value space, and say how.

    ``k = round(v / 255 * (L - 1))``; ``levels`` data give ``k / (L - 1)``, ``binary`` data ``k`` in ``{0, 1}``,
    ``dequantized`` data the bin midpoints ``(k + 0.5) / L``.

    Returns:
        ``(x, note)``: ``x`` ``(N, C, H, W)`` float32, ``note`` the mapping in words.
    """
    top = spec.levels - 1
    k = torch.round(pixels.float() / 255.0 * top)
    if spec.kind == "dequantized":
        return (
            k + 0.5
        ) / spec.levels, f"pixels mapped to {spec.levels} levels, scored at the bin midpoints (k + 0.5) / L"
    return k / top, f"pixels mapped to {spec.levels} levels, k / {top}"


def read_images(paths: list[Path], spec: DataSpec) -> torch.Tensor:
    """Decode image files to ``(N, C, H, W)`` uint8 with the model's channel count.

    Raises:
        DataError: for an unreadable file, or one whose size differs from the model's images.
    """
    from torchvision.io import ImageReadMode, decode_image

    c, h, w = spec.shape
    mode = {1: ImageReadMode.GRAY, 3: ImageReadMode.RGB}.get(c)
    if mode is None:
        raise ConfigError(f"the model scores {c}-channel images; image files give 1 or 3 channels: pass a .pt tensor")
    out = []
    for p in paths:
        try:
            img = decode_image(str(p), mode=mode)
        except Exception as e:
            raise DataError(f"cannot read image {p}: {e}") from e
        if tuple(img.shape[1:]) != (h, w):
            raise DataError(f"{p} is {img.shape[2]}x{img.shape[1]} pixels; the model scores {expected(spec)}")
        out.append(img)
    return torch.stack(out)


def load_tensor(path: Path, spec: DataSpec) -> tuple[torch.Tensor, str]:
    """A ``.pt`` tensor of images ``(N, *shape)`` or ``(*shape)`` in the model's value space.

    Raises:
        DataError: for an unreadable file, another shape, or floats outside ``[0, 1]``.
    """
    try:
        x = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise DataError(f"cannot read tensor {path}: {e}") from e
    if not isinstance(x, torch.Tensor):
        raise DataError(f"{path} holds a {type(x).__name__}, not a tensor of images")
    if tuple(x.shape) == spec.shape:
        x = x[None]
    if tuple(x.shape[1:]) != spec.shape:
        raise DataError(f"{path} holds a tensor of shape {tuple(x.shape)}; the model scores (N, *{spec.shape}): "
                        f"{expected(spec)}")  # fmt: skip
    if x.dtype == torch.uint8:
        return pixels_to_values(x, spec)
    x = x.float()
    if x.numel() and (x.min() < 0 or x.max() > 1):
        raise DataError(f"{path} holds floats outside [0, 1]; pass values in the model's value space or uint8 pixels")
    return x, "tensor values used as given (the model's value space)"


def image_inputs(spec: str, data: DataSpec) -> tuple[list[str], torch.Tensor, str]:
    """Resolve ``input=`` for an image model: ``(names, x (N, *shape), note)``.

    Raises:
        DataError: when nothing matches, or for an unreadable or mis-sized input.
    """
    pattern = str(spec)
    if pattern.endswith(".pt"):
        x, note = load_tensor(Path(pattern), data)
        return [f"{pattern}[{i}]" for i in range(len(x))], x, note
    paths = sorted({Path(p) for part in pattern.split(",") for p in (glob.glob(part) or [part])})
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise DataError(f"input not found: {', '.join(missing)} (pass PNG files, a glob of them, or a .pt tensor)")
    bad = [str(p) for p in paths if p.suffix.lower() not in IMAGE_SUFFIXES]
    if bad:
        raise DataError(f"{', '.join(bad)}: not an image file; the model scores {expected(data)}")
    x, note = pixels_to_values(read_images(paths, data), data)
    return [str(p) for p in paths], x, note


def text_ids(text: str, spec: DataSpec) -> torch.Tensor:
    """Token ids ``(N,)`` of ``text``.

    Raises:
        DataError: for an empty text or characters outside the vocabulary (listed).
    """
    vocab = CharVocab(spec.vocab)
    if not text:
        raise DataError("the text to score is empty")
    unknown = vocab.unknown(text)
    if unknown:
        raise DataError(f"characters outside the model's vocabulary: {', '.join(map(repr, unknown))}; the model "
                        f"scores {expected(spec)}: {spec.vocab!r}")  # fmt: skip
    return vocab.encode(text)


def seeded_log_prob(ctx: Context, x: torch.Tensor) -> torch.Tensor:
    """``log_prob`` of ``x`` ``(B, *shape)`` after seeding with ``ctx.seed``: ``(B,)`` float64 nats. One input at a
    time, a sampled bound (the VAE's) is then the same for an image whatever else is scored with it."""
    torch.manual_seed(ctx.seed)
    return ctx.batched(ctx.model.log_prob, x).double()


def percentile(value: float, reference: torch.Tensor) -> float:
    """Share of ``reference`` at or below ``value``, in percent (``reference`` ``(M,)``, e.g. test ``log p(x)``):
    100 means at least as likely as every reference example, 0 less likely than all of them."""
    return 100.0 * float((reference <= value).double().mean()) if len(reference) else float("nan")


def reference_scores(ctx: Context) -> tuple[str, torch.Tensor]:
    """``(split, per-example scores)`` of the held-out split: ``log p(x)`` nats per image, or, for text,
    nats per character of each window (what a text's own score is compared with)."""
    split = ctx.held_out()
    if ctx.spec.vocab is None:
        return split, ctx.log_probs(split)
    x, y = ctx.split(split)
    out = []
    for i in range(0, len(x), ctx.batch_size):
        sums, counts = ctx.model.score(
            x[i : i + ctx.batch_size].to(ctx.device), y[i : i + ctx.batch_size].to(ctx.device), "test"
        )
        out.append((-sums["loss"] / counts.clamp(min=1)).cpu())  # a text model's loss: nats per token
    return split, torch.cat(out).double() if out else torch.empty(0)


def score(cfg: DictConfig) -> list[dict[str, Any]]:
    """Score ``cfg.input`` or ``cfg.text`` under the checkpoint's model; returns one row per input.

    Raises:
        ConfigError: when neither or both of ``input`` and ``text`` are given, or the model has no ``log_prob``.
        DataError: for an input the model cannot score (its shape, channels or characters), named with what
            was expected.
    """
    if (cfg.get("input") is None) == (cfg.get("text") is None):
        raise ConfigError('give exactly one of input=<png files | glob | .pt | text file> and text="..."')
    model = load_model(cfg.ckpt_path)
    if not model.can("log_prob"):
        raise ConfigError(f"{type(model).__name__} has no likelihood to score with (it does not declare log_prob)")
    spec = model.spec
    datamodule = build_datamodule(cfg.ckpt_path, cfg.get("data_dir"))
    datamodule.prepare_data()
    datamodule.setup("test")
    out = output_dir()
    ctx = Context(model, datamodule, {"batch_size": cfg.batch_size}, out, seed=model.genlab_meta.get("seed", 0),
                  device=cfg.device)  # fmt: skip
    split, reference = reference_scores(ctx)
    rows: list[dict[str, Any]] = []
    if spec.vocab is not None:
        if cfg.get("text") is not None:
            name, text = "text", str(cfg.text)
        else:
            path = Path(str(cfg.input))
            if not path.is_file():
                raise DataError(f'input not found: {path} (pass a text file, or text="...")')
            try:
                name, text = str(path), path.read_text(encoding="utf-8")
            except UnicodeDecodeError as e:
                raise DataError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start}); the model scores "
                                f"{expected(spec)}") from e  # fmt: skip
        ids = text_ids(text, spec)
        if not model.can("generate"):
            raise ConfigError(f"{type(model).__name__} scores fixed windows only; it cannot score a text of any length")
        nats = -model.token_log_probs(ids.to(ctx.device)).double().cpu()
        per_char = float(nats.mean())
        rows.append({"input": name, "log_p_nats": -float(nats.sum()), "nats_per_char": per_char,
                     "bits_per_char": per_char / math.log(2), "num_chars": len(ids),
                     f"percentile_in_{split}": percentile(-per_char, reference)})  # fmt: skip
        if cfg.get("surprisal"):
            with (out / "surprisal.csv").open("w", newline="") as f:
                w = csv.writer(f)
                w.writerow(["position", "char", "surprisal_bits"])
                w.writerows([i, c, float(b) / math.log(2)] for i, (c, b) in enumerate(zip(text, nats, strict=True)))
        note = "text scored after the start symbol, in windows of block_size characters"
    else:
        if cfg.get("text") is not None:
            raise DataError(f"text= is for text models; this model scores {expected(spec)}: use input=")
        names, x, note = image_inputs(str(cfg.input), spec)
        log_p = torch.cat([seeded_log_prob(ctx, x[i : i + 1]) for i in range(len(x))])
        bpd = bits_per_dim(-log_p, spec)
        for name, lp, b in zip(names, log_p.tolist(), bpd.tolist(), strict=True):
            rows.append(
                {
                    "input": name,
                    "log_p_nats": lp,
                    "bits_per_dim": b,
                    f"percentile_in_{split}": percentile(lp, reference),
                }
            )
    with (out / "scores.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    kind = "a lower bound (nll_kind bound)" if model.nll_kind == "bound" else "exact"
    unit = "nats per character, among the windows" if spec.vocab is not None else "log p(x), among the examples"
    note = (f"{note}; log p(x) is {kind}; percentile: the share of the {len(reference)} {split} examples scored "
            f"at most as likely ({unit}; 100 = more likely than all)")  # fmt: skip
    print_scores(rows, note, out / "scores.csv")
    if (out / "surprisal.csv").is_file():
        print(f"surprisal: {out / 'surprisal.csv'}")
    return rows


def print_scores(rows: list[dict[str, Any]], note: str, path: Path) -> None:
    """A rich table of the rows, the note below it, and where the CSV went."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="genlab score")
    for key in rows[0]:
        table.add_column(key, justify="left" if key == "input" else "right", overflow="fold")
    for r in rows:
        table.add_row(*(f"{v:.6g}" if isinstance(v, float) else str(v) for v in r.values()))
    console = Console()
    console.print(table)
    console.print(note, soft_wrap=True)
    console.print(f"scores: {path}", soft_wrap=True)


@hydra.main(version_base="1.3", config_path="../../conf", config_name="score")
def main(cfg: DictConfig) -> None:
    """Console entry point (``genlab-score``); see :func:`score`."""
    run_cli(score, cfg)


if __name__ == "__main__":
    main()
