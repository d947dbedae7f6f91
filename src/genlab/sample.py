"""Sample a trained checkpoint: ``python -m genlab.sample ckpt_path=<file>.ckpt num_samples=64 seed=1``.

Writes ``samples.png`` (a torchvision grid, for image data) and ``samples.pt`` (the tensor
``(num_samples, *shape)`` in the data's value space) into ``outputs/sample/runs/<timestamp>/``.
"""

from __future__ import annotations

import hydra
import torch
from omegaconf import DictConfig, OmegaConf
from torchvision.utils import save_image

from genlab.errors import ConfigError
from genlab.utils.checkpoint import load_model
from genlab.utils.runs import output_dir, run_cli


def draw(cfg: DictConfig) -> torch.Tensor:
    """Draw ``cfg.num_samples`` samples with seed ``cfg.seed``; returns them on the CPU.

    Raises:
        ConfigError: for ``num_samples <= 0``, an unknown device, or a model that cannot sample.
    """
    if cfg.num_samples <= 0:
        raise ConfigError(f"num_samples must be positive, got {cfg.num_samples}")
    model = load_model(cfg.ckpt_path, **OmegaConf.to_container(cfg.model_overrides, resolve=True))
    if not model.can("sample"):
        raise ConfigError(f"{type(model).__name__} cannot sample")
    device = cfg.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda"):
        raise ConfigError(f"device must be cpu, cuda or auto, got {device!r}")
    model = model.to(device).eval()
    condition = None
    if cfg.get("condition") is not None:  # class label(s) for class-conditional models
        labels = OmegaConf.to_container(cfg.condition) if OmegaConf.is_config(cfg.condition) else cfg.condition
        labels = torch.as_tensor(labels, dtype=torch.long).flatten()
        condition = labels.repeat(cfg.num_samples // len(labels) + 1)[: cfg.num_samples].to(device)
    torch.manual_seed(cfg.seed)
    with torch.no_grad():
        x = model.sample(cfg.num_samples, condition=condition).cpu()
    out = output_dir()
    torch.save(x, out / "samples.pt")
    print(f"samples: {out / 'samples.pt'} {tuple(x.shape)}")
    if len(model.spec.shape) == 3:
        save_image(x.float().clamp(0, 1), out / "samples.png", nrow=cfg.nrow)
        print(f"grid: {out / 'samples.png'}")
    return x


@hydra.main(version_base="1.3", config_path="../../conf", config_name="sample")
def main(cfg: DictConfig) -> None:
    """Console entry point (``genlab-sample``); see :func:`draw`."""
    run_cli(draw, cfg)


if __name__ == "__main__":
    main()
