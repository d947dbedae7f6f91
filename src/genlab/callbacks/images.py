"""Sample and reconstruction grids, written to the run folder and to every logger that takes images."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torchvision.utils import make_grid

from genlab.models.base import GenerativeModel
from genlab.utils.images import save_image_grid


class ImageGrids(L.Callback):
    """Write sample and reconstruction grids through the model protocol (``sample``, ``reconstruct``).

    After every ``every_n_epochs`` validation epochs: ``<output_dir>/images/{samples,reconstructions}_
    epoch<E>.png`` and the same grids to the loggers (wandb ``log_image``, TensorBoard
    ``add_image``). After testing: ``<output_dir>/samples.png`` and ``<output_dir>/reconstructions.png``
    (reconstructions of the first test images: originals on odd rows, reconstructions below them).
    Samples use a fixed seed, so grids from different epochs are comparable; the training RNG is
    left untouched. Only rank 0 writes. Models without ``sample``/``reconstruct`` are skipped, as
    are data that are not images ``(C, H, W)``.

    Args:
        output_dir: run folder.
        num_samples: images in the sample grid.
        num_reconstructions: test images reconstructed (shown with their originals).
        nrow: images per grid row.
        every_n_epochs: grid cadence during training (0: only after testing).
        seed: seed of the sampled codes.
    """

    def __init__(
        self,
        output_dir: str,
        num_samples: int = 64,
        num_reconstructions: int = 32,
        nrow: int = 8,
        every_n_epochs: int = 5,
        seed: int = 0,
    ) -> None:
        self.output_dir = Path(output_dir)
        self.num_samples, self.num_reconstructions, self.nrow = num_samples, num_reconstructions, nrow
        self.every_n_epochs, self.seed = every_n_epochs, seed
        self._inputs: dict[str, torch.Tensor] = {}
        self.paths: dict[str, Path] = {}

    def _keep_inputs(self, stage: str, batch, batch_idx: int, dataloader_idx: int) -> None:
        if batch_idx == 0 and dataloader_idx == 0:
            self._inputs[stage] = batch[0][: self.num_reconstructions].detach()

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self._keep_inputs("val", batch, batch_idx, dataloader_idx)

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self._keep_inputs("test", batch, batch_idx, dataloader_idx)

    @torch.no_grad()
    def grids(self, model: GenerativeModel, stage: str) -> dict[str, torch.Tensor]:
        """``{"samples": grid, "reconstructions": grid}``, each ``(3, H', W')`` in ``[0, 1]``."""
        out: dict[str, torch.Tensor] = {}
        if len(model.spec.shape) != 3:
            return out
        if model.can("sample"):
            with torch.random.fork_rng(devices=[model.device] if model.device.type == "cuda" else []):
                torch.manual_seed(self.seed)
                x = model.sample(self.num_samples).float().cpu()
            out["samples"] = make_grid(x.clamp(0, 1), nrow=self.nrow)
        if model.can("reconstruct") and stage in self._inputs:
            x = self._inputs[stage]
            r = model.reconstruct(x).float().clamp(0, 1)
            n = self.nrow
            rows = [t for i in range(0, len(x), n) for t in (x[i : i + n], r[i : i + n])]
            out["reconstructions"] = make_grid(torch.cat(rows).cpu(), nrow=n)
        return out

    def _publish(self, trainer: L.Trainer, grids: dict[str, torch.Tensor], stage: str, step: int) -> None:
        for logger in trainer.loggers:
            for name, grid in grids.items():
                key = f"{stage}/{name}"
                if hasattr(logger, "log_image"):  # wandb, and other loggers with that API
                    logger.log_image(key=key, images=[grid], step=step)
                elif isinstance(logger, TensorBoardLogger):
                    logger.experiment.add_image(key, grid, global_step=step)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: GenerativeModel) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero or self.every_n_epochs <= 0:
            return
        if (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        grids = self.grids(pl_module, "val")
        folder = self.output_dir / "images"
        folder.mkdir(parents=True, exist_ok=True)
        for name, grid in grids.items():
            save_image_grid(grid, folder / f"{name}_epoch{trainer.current_epoch:03d}.png")
        self._publish(trainer, grids, "val", trainer.global_step)

    def on_test_end(self, trainer: L.Trainer, pl_module: GenerativeModel) -> None:
        if not trainer.is_global_zero:
            return
        grids = self.grids(pl_module, "test")
        self.output_dir.mkdir(parents=True, exist_ok=True)
        for name, grid in grids.items():
            self.paths[name] = self.output_dir / f"{name}.png"
            save_image_grid(grid, self.paths[name])
        self._publish(trainer, grids, "test", trainer.global_step)
