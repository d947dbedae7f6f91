"""Image grids as files people can look at: torchvision's grid, enlarged by nearest neighbour to a readable size."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torchvision.utils import make_grid, save_image

MIN_SIDE = 256  # pixels on the short side of every grid written to a file


def upscaled(grid: torch.Tensor, min_side: int = MIN_SIDE) -> torch.Tensor:
    """``grid`` ``(C, H, W)`` enlarged by the smallest integer factor that gives ``min(H, W) >= min_side`` (nearest
    neighbour: every pixel becomes a block, no blur); unchanged when it is large enough."""
    factor = max(1, math.ceil(min_side / min(grid.shape[-2:])))
    return grid.repeat_interleave(factor, -2).repeat_interleave(factor, -1) if factor > 1 else grid


def save_grid(images: torch.Tensor, path: str | Path, nrow: int, padding: int = 2, pad_value: float = 0.5) -> Any:
    """Write ``images`` ``(B, C, H, W)`` in ``[0, 1]`` (clipped) as one PNG grid of ``nrow`` columns
    (``torchvision.utils.make_grid``), :func:`upscaled`. Returns ``path``."""
    grid = make_grid(images.detach().float().cpu().clamp(0, 1), nrow=nrow, padding=padding, pad_value=pad_value)
    save_image(upscaled(grid), path)
    return path


def save_image_grid(grid: torch.Tensor, path: str | Path) -> Any:
    """Write a grid already made, ``(C, H, W)`` in ``[0, 1]``, :func:`upscaled`. Returns ``path``."""
    save_image(upscaled(grid.detach().float().cpu()), path)
    return path
