"""``model.compile``: networks are compiled in place, so checkpoints load the same compiled or not."""

import lightning as L
import torch

from genlab.data.digits import DigitsDataModule
from genlab.models.pixelcnn import PixelCNN

SMALL = {"hidden_channels": 4, "num_layers": 1, "head_channels": 4}


def trainer(tmp_path, **kw):
    return L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                     num_sanity_val_steps=0, default_root_dir=tmp_path, **kw)  # fmt: skip


def test_a_compiled_checkpoint_has_plain_keys_and_round_trips_with_compile_on_and_off(tmp_path):
    dm = DigitsDataModule(batch_size=64)
    torch.manual_seed(0)
    model = PixelCNN(dm.spec.to_dict(), compile="eager", **SMALL)  # the eager backend: dynamo without codegen
    tr = trainer(tmp_path, max_steps=2, limit_val_batches=1)
    tr.fit(model, datamodule=dm)
    assert model._compiled and all(m._compiled_call_impl is not None for m in model.blocks)
    path = tmp_path / "compiled.ckpt"
    tr.save_checkpoint(path)
    keys = set(torch.load(path, weights_only=True)["state_dict"])
    assert keys == set(PixelCNN(dm.spec.to_dict(), **SMALL).state_dict()) and not any("_orig_mod" in k for k in keys)

    x = dm.represent(dm.splits["val"][0][:8])
    plain = PixelCNN.load_from_checkpoint(path, weights_only=True, compile=False)
    assert plain.compile_backend is None
    with torch.no_grad():
        torch.testing.assert_close(plain.eval().log_prob(x), model.eval().log_prob(x))
    # and an uncompiled checkpoint loads into a compiled model, which tests to the same numbers
    path2 = tmp_path / "plain.ckpt"
    torch.save({"state_dict": plain.state_dict(), "hyper_parameters": dict(plain.hparams),
                "pytorch-lightning_version": L.__version__}, path2)  # fmt: skip
    compiled = PixelCNN.load_from_checkpoint(path2, weights_only=True, compile="eager")
    (a,) = trainer(tmp_path, limit_test_batches=2).test(compiled, datamodule=dm, verbose=False)
    (b,) = trainer(tmp_path, limit_test_batches=2).test(plain, datamodule=dm, verbose=False)
    assert compiled._compiled and not plain._compiled
    assert a["test/nll_nats"] == b["test/nll_nats"]
