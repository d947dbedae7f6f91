"""DivergenceGuard: non-finite and exploding losses stop the run with the step and the metric named."""

import math
from types import SimpleNamespace

import pytest
import torch

from genlab.callbacks.divergence import DivergenceGuard
from genlab.errors import Diverged


def trainer(step, **metrics):
    values = {k.replace("__", "/"): torch.tensor(v) for k, v in metrics.items()}
    return SimpleNamespace(callback_metrics=values, global_step=step, current_epoch=0, sanity_checking=False)


def feed(guard, losses):
    for step, loss in enumerate(losses):
        guard.on_train_batch_end(trainer(step, train__loss=loss), None, None, None, step)


def test_ordinary_training_including_negative_nats_passes():
    guard = DivergenceGuard()
    feed(guard, [120.0, 80.0, 95.0, 60.0])
    feed(DivergenceGuard(), [-500.0, -900.0, -850.0, -1200.0])  # densities on [0, 1]^D have negative NLLs
    assert guard.best == 60.0


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_a_non_finite_loss_names_the_step(bad):
    with pytest.raises(Diverged, match=rf"at step 2 \(epoch 0\): train/loss is {bad}; lower model.lr"):
        feed(DivergenceGuard(), [100.0, 90.0, bad])


def test_a_loss_that_rises_three_orders_of_magnitude_above_its_best():
    feed(DivergenceGuard(), [100.0, 90.0, 90_000.0])  # 1000 x 90 above the best: still allowed
    with pytest.raises(
        Diverged, match=r"at step 2 .*train/loss = 9.01e\+04 rose more than 1000-fold above its best 90"
    ):
        feed(DivergenceGuard(), [100.0, 90.0, 90_100.0])


def test_a_non_finite_validation_loss_stops_before_the_checkpoint_is_written():
    with pytest.raises(Diverged, match="val/loss is nan"):
        DivergenceGuard().on_validation_end(trainer(5, val__loss=math.nan), None)
    DivergenceGuard().on_validation_end(trainer(5, val__loss=3.0), None)


def test_its_best_value_survives_a_checkpoint():
    guard = DivergenceGuard()
    feed(guard, [50.0, 40.0])
    again = DivergenceGuard()
    again.load_state_dict(guard.state_dict())
    assert again.best == 40.0
