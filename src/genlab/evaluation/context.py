"""What every evaluation test reads: the model, its data, the settings, and shared cached values.

A test module (``density``, ``samples``, ``representation``, ``prototypes``, ``ood``, ``classifier``)
exposes two functions and nothing else is needed to join the evaluator:

* ``not_applicable(ctx) -> str | None``: why the test does not apply to this model (decided from its
  declared capabilities and its :class:`~genlab.data.spec.DataSpec` only, never its class), or ``None``;
* ``run(ctx) -> Outcome``: the numbers, figures and per-class tables of the test.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from genlab.data.spec import DataSpec
from genlab.errors import ConfigError

#: a per-class table: (column names, rows); logged as a ``wandb.Table`` and written as CSV
Table = tuple[list[str], list[list[Any]]]


@dataclass
class Outcome:
    """What one test returns.

    Attributes:
        metrics: flat numbers and short strings, keys without the ``eval/`` prefix (``"fid"``,
            ``"probe_accuracy"``); lists of numbers are allowed (e.g. a class histogram).
        figures: ``{name: PNG path}`` written into the run folder.
        tables: ``{name: (columns, rows)}``, e.g. per-class numbers.
    """

    metrics: dict[str, Any] = field(default_factory=dict)
    figures: dict[str, Path] = field(default_factory=dict)
    tables: dict[str, Table] = field(default_factory=dict)


def to_levels(x: torch.Tensor, spec: DataSpec) -> torch.Tensor:
    """Map values in a model's value space to the data's level grid ``k / (L - 1)`` in ``[0, 1]``.

    ``levels`` data are rounded to the grid (model outputs such as decoder means land between levels),
    ``dequantized`` values ``(k + u) / L`` are floored to ``k``, ``binary`` stays ``{0, 1}``. All models
    of one dataset then share one value space, so their sample-quality numbers compare.

    Args:
        x: ``(B, *spec.shape)`` floats (values outside ``[0, 1]`` are clipped).

    Returns:
        ``(B, *spec.shape)`` float32 on the grid ``{0, 1/(L-1), ..., 1}``.
    """
    x = x.float().clamp(0.0, 1.0)
    top = spec.levels - 1
    if spec.kind == "dequantized":
        k = torch.floor(x * spec.levels).clamp_(0, top)
    else:
        k = torch.round(x * top)
    return k / top


class Context:
    """The model and data under evaluation, the settings of ``conf/evaluation``, and cached values.

    Args:
        model: a :class:`~genlab.models.base.GenerativeModel` (any family).
        datamodule: its DataModule, set up; it provides ``split_tensors(split) -> (x, y)``.
        cfg: the ``evaluation`` config (a plain dict).
        out_dir: the run folder (figures go here).
        seed: base seed of every random choice the tests make.
        device: where the model runs (``"auto"``: CUDA when available).
        prepare: move the model to ``device`` and set it to eval mode (``False`` for settings checks before
            training, which must leave the model as it is).

    Raises:
        ConfigError: for an unknown device.
    """

    def __init__(
        self,
        model: Any,
        datamodule: Any,
        cfg: dict[str, Any],
        out_dir: Path,
        seed: int = 0,
        device: str = "auto",
        prepare: bool = True,
    ) -> None:
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device not in ("cpu", "cuda"):
            raise ConfigError(f"evaluation.device must be cpu, cuda or auto, got {device!r}")
        self.model = model.to(device).eval() if prepare else model
        self.datamodule, self.cfg, self.out_dir, self.seed = datamodule, cfg, Path(out_dir), int(seed)
        self.device = torch.device(device)
        self.spec: DataSpec = model.spec
        self.batch_size = int(cfg.get("batch_size", 256))
        self._cache: dict[Any, Any] = {}

    # --- data ----------------------------------------------------------------------------------
    @property
    def is_image(self) -> bool:
        """Images ``(C, H, W)`` of values in ``[0, 1]`` (not token ids)."""
        return self.spec.vocab is None and len(self.spec.shape) == 3

    @property
    def labelled(self) -> bool:
        """Whether the data carry class labels."""
        return bool(self.spec.num_classes)

    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x, y)`` of split ``name`` on the CPU, as the model sees them (fixed seeded noise), cached.

        ``x`` is ``(N, *spec.shape)``; ``y`` is ``(N,)`` int64 labels (token targets for text).
        """
        key = ("split", name)
        if key not in self._cache:
            self._cache[key] = self.datamodule.split_tensors(name)
        return self._cache[key]

    def has_split(self, name: str) -> bool:
        """Whether split ``name`` exists and is not empty."""
        try:
            return len(self.split(name)[0]) > 0
        except KeyError:
            return False

    def text(self, split: str) -> str:
        """The characters of split ``split`` of text data (a spec with a vocabulary)."""
        from genlab.data.spec import CharVocab

        return CharVocab(self.spec.vocab).decode(self.datamodule.split_ids(split))

    def held_out(self) -> str:
        """The split held-out tests use: ``test``, or ``val`` when there is no test split."""
        return "test" if self.has_split("test") else "val"

    # --- batched, seeded model calls -----------------------------------------------------------
    def generator(self, salt: int = 0) -> torch.Generator:
        """A CPU generator seeded with ``seed + salt`` (each use gets its own salt)."""
        return torch.Generator().manual_seed(self.seed + salt)

    @torch.no_grad()
    def batched(self, fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """``fn`` over ``x`` in batches of ``batch_size`` on the model's device; results on the CPU."""
        out = [fn(x[i : i + self.batch_size].to(self.device)).cpu() for i in range(0, len(x), self.batch_size)]
        return torch.cat(out) if out else torch.empty(0)

    def log_probs(self, split: str) -> torch.Tensor:
        """Per-example ``log_prob`` of ``split``: ``(N,)`` float64 nats, seeded (sampled bounds repeat), cached."""
        key = ("log_prob", split)
        if key not in self._cache:
            with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
                torch.manual_seed(self.seed)
                self._cache[key] = self.batched(self.model.log_prob, self.split(split)[0]).double()
        return self._cache[key]

    @torch.no_grad()
    def samples(self, n: int, form: str = "draw") -> torch.Tensor:
        """``n`` samples of the model on the CPU, seeded, cached per ``(n, form)``.

        ``form="draw"``: ``model.sample(n)`` (for a latent-variable model, ``x ~ p(x | z)``).
        ``form="decoder_mean"``: ``model.decode(model.sample_codes(n))``, the decoder's mean given prior
        codes (models that declare ``decode``).
        """
        key = ("samples", n, form)
        if key not in self._cache:
            with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
                torch.manual_seed(self.seed + 1)
                parts, left = [], n
                while left > 0:
                    b = min(left, self.batch_size)
                    if form == "draw":
                        parts.append(self.model.sample(b).cpu())
                    else:
                        parts.append(self.model.decode(self.model.sample_codes(b)).cpu())
                    left -= b
                self._cache[key] = torch.cat(parts)
        return self._cache[key]

    def sample_forms(self) -> list[str]:
        """The labelled forms of samples this model gives: ``draw``, and ``decoder_mean`` for a model with a
        likelihood and a decoder (a latent-variable model, where the two differ)."""
        forms = ["draw"] if self.model.can("sample") else []
        if forms and self.model.can("decode") and self.model.nll_kind != "none":
            forms.append("decoder_mean")
        return forms

    # --- outputs -------------------------------------------------------------------------------
    def figure(self, name: str) -> Path:
        """Path of figure ``name`` in the run folder (``<out_dir>/evaluation/<name>.png``), folder created."""
        folder = self.out_dir / "evaluation"
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"{name}.png"

    def section(self, name: str) -> dict[str, Any]:
        """The settings of one test (``cfg[name]``, ``{}`` when absent)."""
        return dict(self.cfg.get(name) or {})
