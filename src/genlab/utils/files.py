"""Files written so that a reader never sees half of one: a temporary file beside the target, then one rename."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins import TorchCheckpointIO


def current_umask() -> int:
    """The process's file-creation mask: from ``/proc/self/status`` on Linux (reading never changes it, which
    matters while other threads create files), else by setting and restoring it."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save(obj)`` to a temporary file in ``path``'s own folder (so on its file system, whatever ``$TMPDIR``
    is), flushed to disk, then ``os.replace`` onto ``path`` (atomic on POSIX). A write that is killed or fails leaves
    the previous file whole, and of two racing writers the last one wins with a complete file.

    Raises:
        whatever ``torch.save`` raises (the temporary file is removed first).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes 0600: give the file a plain open()'s mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's ``TorchCheckpointIO`` (``torch.save`` / ``torch.load``) with :func:`atomic_save` for writes: a
    checkpoint file is either the old one or the new one, never truncated (Lightning writes in place)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options, got {storage_options!r}")
        atomic_save(checkpoint, path)
