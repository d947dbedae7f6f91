"""Atomic writes: a checkpoint is the old file or the new one, never a truncated one, wherever $TMPDIR is."""

import lightning as L
import pytest
import torch

from genlab.data.digits import DigitsDataModule
from genlab.models.vae import VAE
from genlab.utils import files
from genlab.utils.files import AtomicCheckpointIO, atomic_save


def test_a_write_killed_half_way_leaves_the_previous_file_whole(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    atomic_save({"step": 1}, path)
    real_save = torch.save

    def killed(obj, f):  # half a file, then the process is interrupted
        real_save(obj, f)
        f.truncate(10)
        raise KeyboardInterrupt

    monkeypatch.setattr(files.torch, "save", killed)
    with pytest.raises(KeyboardInterrupt):
        atomic_save({"step": 2}, path)
    assert torch.load(path, weights_only=True) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temporary file left behind


def test_the_temporary_file_lives_beside_the_target_not_in_tmpdir(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path / "does-not-exist"))  # another file system, or none at all
    atomic_save({"ok": True}, tmp_path / "sub" / "a.ckpt")
    assert torch.load(tmp_path / "sub" / "a.ckpt", weights_only=True) == {"ok": True}


def test_the_trainer_writes_checkpoints_through_it(tmp_path, monkeypatch):
    torch.manual_seed(0)
    dm = DigitsDataModule()
    model = VAE(dm.spec.to_dict(), latent_dim=2, iwae_k=1)
    trainer = L.Trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=1, logger=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
                        plugins=[AtomicCheckpointIO()])  # fmt: skip
    calls = []
    real = files.atomic_save
    monkeypatch.setattr(files, "atomic_save", lambda obj, path: calls.append(path) or real(obj, path))
    trainer.fit(model, datamodule=dm)
    assert calls and all(str(p).endswith(".ckpt") for p in calls)


def test_a_checkpoint_gets_the_mode_a_plain_write_would_have(tmp_path):
    import os
    import stat

    from genlab.utils.files import atomic_save

    atomic_save({"x": 1}, tmp_path / "a.ckpt")
    (tmp_path / "b.txt").write_text("plain")
    mode = lambda p: stat.S_IMODE(os.stat(p).st_mode)  # noqa: E731
    assert mode(tmp_path / "a.ckpt") == mode(tmp_path / "b.txt")
