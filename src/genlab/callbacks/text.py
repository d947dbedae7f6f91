"""Text samples, written to the run folder and to every logger that takes text."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger

from genlab.data.spec import CharVocab
from genlab.models.base import GenerativeModel

SEPARATOR = "\n" + "-" * 40 + "\n"


class TextSamples(L.Callback):
    """Decode ``model.sample(num_samples)`` with the data's vocabulary (``model.spec.vocab``) and write it.

    Uses the protocol only: any model that can sample token data with a vocabulary is served, others
    (images, models without ``sample``) are skipped. After every ``every_n_val`` validation runs:
    ``<output_dir>/text/samples_step<S>.txt``. At the end of training, and again after testing (then
    from the tested weights, e.g. the best checkpoint): ``<output_dir>/samples.txt``. Samples are
    separated by a dashed line; the same text goes to wandb (``log_text``) and TensorBoard
    (``add_text``). Samples use a fixed seed and leave the training RNG untouched. Only rank 0 writes.

    Args:
        output_dir: run folder.
        num_samples: samples per file, each ``spec.shape[0]`` tokens long.
        every_n_val: cadence during training, in validation runs (0: only after testing).
        seed: seed of the samples.
    """

    def __init__(self, output_dir: str, num_samples: int = 4, every_n_val: int = 1, seed: int = 0) -> None:
        self.output_dir = Path(output_dir)
        self.num_samples, self.every_n_val, self.seed = num_samples, every_n_val, seed
        self._val_runs = 0
        self.paths: dict[str, Path] = {}

    @torch.no_grad()
    def texts(self, model: GenerativeModel) -> list[str]:
        """``num_samples`` decoded samples (an empty list when the model or data do not apply)."""
        vocab = model.spec.vocab
        if vocab is None or not model.can("sample") or self.num_samples <= 0:
            return []
        was_training = model.training
        model.eval()
        try:
            with torch.random.fork_rng(devices=[model.device] if model.device.type == "cuda" else []):
                torch.manual_seed(self.seed)
                ids = model.sample(self.num_samples).cpu()
        finally:
            model.train(was_training)
        return [CharVocab(vocab).decode(row) for row in ids.reshape(len(ids), -1)]

    def _write(self, trainer: L.Trainer, texts: list[str], path: Path, key: str) -> Path | None:
        if not texts:
            return None
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(SEPARATOR.join(texts) + "\n", encoding="utf-8")
        for logger in trainer.loggers:
            if hasattr(logger, "log_text"):  # wandb
                logger.log_text(key=key, columns=["sample"], data=[[t] for t in texts], step=trainer.global_step)
            elif isinstance(logger, TensorBoardLogger):
                body = "\n\n".join(f"```\n{t}\n```" for t in texts)
                logger.experiment.add_text(key, body, global_step=trainer.global_step)
        return path

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: GenerativeModel) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero or self.every_n_val <= 0:
            return
        self._val_runs += 1
        if self._val_runs % self.every_n_val:
            return
        path = self.output_dir / "text" / f"samples_step{trainer.global_step:06d}.txt"
        self._write(trainer, self.texts(pl_module), path, "val/samples")

    def _final(self, trainer: L.Trainer, pl_module: GenerativeModel, key: str) -> None:
        if not trainer.is_global_zero:
            return
        path = self._write(trainer, self.texts(pl_module), self.output_dir / "samples.txt", key)
        if path is not None:
            self.paths["samples_text"] = path

    def on_train_end(self, trainer: L.Trainer, pl_module: GenerativeModel) -> None:
        self._final(trainer, pl_module, "train/samples")  # a run without a test split still gets samples.txt

    def on_test_end(self, trainer: L.Trainer, pl_module: GenerativeModel) -> None:
        self._final(trainer, pl_module, "test/samples")
