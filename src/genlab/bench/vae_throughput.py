"""VAE training throughput: Lightning + genlab's in-memory DataModule against plain PyTorch loops.

All contenders train the same network (``VAE``, CNN, same seed) with the same batch size on the
same data, in one process, one after another (twice each, best kept):

* ``lightning``: ``Trainer.fit`` on the genlab DataModule (batches sliced from a uint8 tensor);
* ``plain_tensors``: a hand-written loop over a float tensor held in memory (the baseline);
* ``plain_dataloader``: a hand-written loop over ``torchvision.datasets.MNIST`` with per-item
  ``ToTensor`` through a ``DataLoader`` (what most tutorials do).

Reported: images/s for each, and ratios against ``plain_tensors``.
"""

from __future__ import annotations

import time

import lightning as L
import torch

from genlab.bench.data import mnist_root
from genlab.bench.timing import StepTimer
from genlab.data.digits import DigitsDataModule
from genlab.data.vision import MNISTDataModule
from genlab.models.vae import VAE
from genlab.nn.conv import ConvDecoder, ConvEncoder
from genlab.utils.config import config_of

BATCH = 128


def _model(spec) -> VAE:
    torch.manual_seed(0)
    nets = {"encoder": config_of(ConvEncoder, channels=[32, 64]), "decoder": config_of(ConvDecoder, channels=[64, 32])}
    return VAE(spec.to_dict(), **nets, latent_dim=16)


def _lightning(dm, steps: int, warmup: int) -> float:
    timer = StepTimer(warmup)
    trainer = L.Trainer(
        max_steps=steps + warmup, limit_val_batches=0, num_sanity_val_steps=0, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        accelerator="cpu", devices=1, callbacks=[timer],
    )  # fmt: skip
    trainer.fit(_model(dm.spec), datamodule=dm)
    return steps * BATCH / (timer.end - timer.start)


def _plain(batches, spec, steps: int, warmup: int) -> float:
    model = _model(spec)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    it = iter(batches())
    start = 0.0
    for step in range(steps + warmup):
        if step == warmup:
            start = time.perf_counter()
        try:
            x, y = next(it)
        except StopIteration:
            it = iter(batches())
            x, y = next(it)
        loss = model.score(x, y, "train")[0]["loss"].mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return steps * BATCH / (time.perf_counter() - start)


def run(quick: bool = False) -> dict:
    """Measure and return ``{"images_per_s": {...}, "ratio_vs_plain_tensors": {...}, ...}``."""
    steps, warmup = (30, 5) if quick else (200, 20)
    root = mnist_root()
    dm = MNISTDataModule(str(root), download=False, batch_size=BATCH) if root else DigitsDataModule(batch_size=BATCH)
    dm.setup("fit")
    levels, labels = dm.splits["train"]
    x_all = levels.float() / (dm.levels - 1)

    def tensor_batches():
        """Shuffled ``(x, y)`` batches of the float tensor, by index (the plain baseline)."""
        perm = torch.randperm(len(x_all))
        for i in range(0, len(perm) - BATCH + 1, BATCH):
            idx = perm[i : i + BATCH]
            yield x_all[idx], labels[idx]

    contenders = {
        "lightning": lambda: _lightning(dm, steps, warmup),
        "plain_tensors": lambda: _plain(tensor_batches, dm.spec, steps, warmup),
    }
    if root:
        from torchvision import datasets, transforms

        ds = datasets.MNIST(str(root), train=True, transform=transforms.ToTensor())
        loader = torch.utils.data.DataLoader(ds, batch_size=BATCH, shuffle=True, drop_last=True)
        contenders["plain_dataloader"] = lambda: _plain(lambda: loader, dm.spec, steps, warmup)
    best: dict[str, float] = {}
    for _ in range(2):
        for name, fn in contenders.items():
            best[name] = max(best.get(name, 0.0), fn())
    base = best["plain_tensors"]
    return {
        "data": f"MNIST subset {tuple(levels.shape)}" if root else f"digits {tuple(levels.shape)}",
        "model": "VAE cnn channels=[32, 64] latent_dim=16",
        "batch_size": BATCH,
        "timed_steps": steps,
        "torch_threads": torch.get_num_threads(),
        "images_per_s": {k: round(v, 1) for k, v in best.items()},
        "ratio_vs_plain_tensors": {k: round(v / base, 3) for k, v in best.items()},
    }
