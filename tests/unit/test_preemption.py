"""The time-based checkpoint writes last.ckpt inside an epoch, and only when asked to."""

import lightning as L
import pytest
import torch
from lightning.pytorch.demos.boring_classes import BoringModel

from genlab.callbacks.preemption import TimedCheckpoint


@pytest.mark.parametrize("minutes", [None, 1e-9])
def test_the_timed_checkpoint_saves_mid_epoch_only_when_it_has_an_interval(tmp_path, minutes):
    trainer = L.Trainer(
        max_epochs=1, limit_train_batches=8, limit_val_batches=0, logger=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=[TimedCheckpoint(str(tmp_path), minutes=minutes)],
        enable_checkpointing=True, default_root_dir=tmp_path,
    )  # fmt: skip
    trainer.fit(BoringModel())
    last = tmp_path / "last.ckpt"
    if minutes is None:
        assert not last.exists()
        return
    saved = torch.load(last, weights_only=True)["loops"]["fit_loop"]
    assert saved["epoch_progress"]["current"]["completed"] == 0  # written inside epoch 0, at a batch's end
    assert saved["epoch_loop.batch_progress"]["current"]["processed"] == 8
