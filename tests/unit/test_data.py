import pickle
import shutil
import struct

import numpy as np
import pytest
import torch

from genlab.data.base import TensorBatchLoader, TensorDataModule, split_off
from genlab.data.digits import DigitsDataModule
from genlab.data.vision import CIFAR10DataModule, FashionMNISTDataModule, MNISTDataModule, check_idx_file
from genlab.errors import ConfigError, DataError


class Levels(TensorDataModule):
    shape = (1, 2, 2)
    levels = 256


def test_continuous_values_lie_on_the_level_grid():
    k = torch.arange(256, dtype=torch.uint8).view(64, 1, 2, 2)
    x = Levels(representation="continuous").represent(k)
    assert torch.equal(x * 255, k.float()) and x.min() == 0 and x.max() == 1


def test_dequantized_values_stay_in_their_bins():
    k = torch.arange(256, dtype=torch.uint8).view(64, 1, 2, 2).repeat(20, 1, 1, 1)
    x = Levels(representation="dequantized").represent(k)
    assert x.min() >= 0 and x.max() < 1
    assert torch.equal(torch.floor(x * 256), k.float())


def test_static_and_dynamic_binarization():
    k = torch.tensor([0, 100, 128, 255], dtype=torch.uint8).view(1, 1, 2, 2)
    static = Levels(representation="binarized", binarize="static").represent(k)
    assert static.flatten().tolist() == [0.0, 0.0, 1.0, 1.0]
    dyn = Levels(representation="binarized", binarize="dynamic")
    draws = dyn.represent(k.repeat(4000, 1, 1, 1))
    assert set(draws.unique().tolist()) <= {0.0, 1.0}
    # Bernoulli with p = k/255: the empirical means match within 4 standard errors
    p = k.float().flatten() / 255
    se = (p * (1 - p) / 4000).sqrt().clamp(min=1e-3)
    assert ((draws.flatten(1).mean(0) - p).abs() <= 4 * se).all()


def test_unknown_representation_is_refused():
    with pytest.raises(ConfigError, match="data.representation"):
        Levels(representation="fuzzy")
    with pytest.raises(ConfigError, match="MNIST family"):
        CIFAR10DataModule("/nowhere", representation="binarized")


def test_eval_noise_is_fixed_between_epochs():
    dm = DigitsDataModule(representation="dequantized")
    dm.setup()
    a = torch.cat([x for x, _ in dm.val_dataloader()])
    b = torch.cat([x for x, _ in dm.val_dataloader()])
    assert torch.equal(a, b)


def test_split_off_is_disjoint_complete_and_seeded():
    lv, y = torch.arange(50).view(50, 1), torch.arange(50)
    (rest_x, rest_y), (held_x, held_y) = split_off(lv, y, 0.2, seed=3)
    assert len(held_y) == 10 and sorted(rest_y.tolist() + held_y.tolist()) == list(range(50))
    assert torch.equal(rest_x.flatten(), rest_y) and torch.equal(held_x.flatten(), held_y)
    assert torch.equal(split_off(lv, y, 0.2, seed=3)[1][1], held_y)
    assert not torch.equal(split_off(lv, y, 0.2, seed=4)[1][1], held_y)


def test_digits_split_sizes_and_spec():
    dm = DigitsDataModule()
    dm.setup()
    sizes = {k: len(v[0]) for k, v in dm.splits.items()}
    assert sizes == {"train": 1294, "val": 144, "test": 359}
    assert all(v[0].max() <= 16 for v in dm.splits.values())
    assert dm.spec.shape == (1, 8, 8) and dm.spec.levels == 17 and dm.spec.num_classes == 10


@pytest.mark.parametrize("world", [1, 2, 3])
@pytest.mark.parametrize("n", [0, 1, 103])
def test_eval_shards_cover_every_example_exactly_once(world, n):
    lv, y = torch.arange(n).view(n, 1), torch.arange(n)
    seen = torch.cat(
        [torch.zeros(0, dtype=torch.long)]
        + [b for r in range(world) for _, b in TensorBatchLoader(lv, y, 10, lambda t: t, rank=r, world_size=world)]
    )
    assert sorted(seen.tolist()) == list(range(n))


@pytest.mark.parametrize("world", [2, 3, 4])
def test_pass_shards_of_a_fitted_model_see_every_example_once_a_pass(world):
    """What ``pass_dataloader`` serves a model fitted by passes under DDP: shuffled, no batch dropped."""
    n = 103  # not a multiple of any world size
    lv, y = torch.arange(n).view(n, 1), torch.arange(n)
    loaders = [TensorBatchLoader(lv, y, 8, lambda t: t, shuffle=True, drop_last=False, rank=r, world_size=world)
               for r in range(world)]  # fmt: skip
    for _ in range(2):  # every pass, with its own permutation
        seen = torch.cat([b for ld in loaders for _, b in ld])
        assert sorted(seen.tolist()) == list(range(n))


def test_train_shards_are_equal_disjoint_and_reshuffled():
    n, world = 101, 2
    lv, y = torch.arange(n).view(n, 1), torch.arange(n)
    loaders = [TensorBatchLoader(lv, y, 8, lambda t: t, shuffle=True, drop_last=True, rank=r, world_size=world)
               for r in range(world)]  # fmt: skip
    first = [torch.cat([b for _, b in ld]) for ld in loaders]
    assert len(loaders[0]) == len(loaders[1]) == (n // world) // 8
    assert not set(first[0].tolist()) & set(first[1].tolist())
    second = torch.cat([b for _, b in loaders[0]])
    assert not torch.equal(first[0], second)


# --- real on-disk formats, written small ---------------------------------------------------------
def write_idx(path, arr: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(">" + "I" * arr.ndim, *arr.shape)
    path.write_bytes(header + arr.astype(np.uint8).tobytes())


def write_mnist_like(root, folder: str, n_train=30, n_test=10, seed=0):
    rng = np.random.default_rng(seed)
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    data = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
        data[prefix] = (images, labels)
    return data


def test_fashion_mnist_loads_files_in_the_real_format(tmp_path):
    data = write_mnist_like(tmp_path, "FashionMNIST")
    dm = FashionMNISTDataModule(str(tmp_path), download=False, val_fraction=0.2, batch_size=4)
    dm.prepare_data()
    dm.setup()
    test_levels, test_labels = dm.splits["test"]
    assert test_levels.shape == (10, 1, 28, 28) and test_levels.dtype == torch.uint8
    assert torch.equal(test_levels[:, 0], torch.from_numpy(data["t10k"][0]))
    assert torch.equal(test_labels, torch.from_numpy(data["t10k"][1]).long())
    assert len(dm.splits["train"][0]) + len(dm.splits["val"][0]) == 30
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.long


def write_cifar_like(root, n_per_batch=6, seed=0):
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, size=(n_per_batch, 3072), dtype=np.uint8)  # rows: R plane, G plane, B plane
        labels = rng.integers(0, 10, size=n_per_batch).tolist()
        with open(folder / name, "wb") as f:
            pickle.dump({"batch_label": name, "data": data, "labels": labels}, f)
        batches[name] = (data, labels)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                                     "ship", "truck"], "num_vis": 3072}, f)  # fmt: skip
    return batches


def test_cifar10_loads_files_in_the_real_format(tmp_path):
    batches = write_cifar_like(tmp_path)
    dm = CIFAR10DataModule(str(tmp_path), download=False, val_fraction=0.1)
    dm.prepare_data()
    dm.setup()
    levels, labels = dm.splits["test"]
    data, want = batches["test_batch"]
    assert levels.shape == (6, 3, 32, 32)
    assert torch.equal(levels, torch.from_numpy(data).view(6, 3, 32, 32))  # channel-first planes
    assert labels.tolist() == want
    assert len(dm.splits["train"][0]) + len(dm.splits["val"][0]) == 30
    assert dm.spec.shape == (3, 32, 32) and dm.spec.levels == 256


def test_cifar10_corrupt_batch_is_a_clear_error(tmp_path):
    write_cifar_like(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"\x80\x04garbage")
    dm = CIFAR10DataModule(str(tmp_path), download=False)
    with pytest.raises(DataError, match="truncated or corrupt"):
        dm.setup()


def test_missing_files_offline_name_the_folder_and_files(tmp_path):
    dm = MNISTDataModule(str(tmp_path / "empty"), download=False)
    with pytest.raises(DataError) as e:
        dm.prepare_data()
    msg = str(e.value)
    assert str(tmp_path / "empty" / "MNIST" / "raw") in msg and "train-images-idx3-ubyte" in msg
    assert "data.download=true" in msg


def test_truncated_idx_file_is_a_clear_error(tmp_path, mnist_root):
    root = tmp_path / "copy"
    shutil.copytree(mnist_root, root)
    f = root / "MNIST" / "raw" / "train-images-idx3-ubyte"
    f.write_bytes(f.read_bytes()[:-1000])
    with pytest.raises(DataError, match="truncated or corrupt"):
        check_idx_file(f)
    with pytest.raises(DataError, match="train-images-idx3-ubyte"):
        MNISTDataModule(str(root), download=False).setup()


def test_real_mnist_subset_decodes_once_into_memory(mnist_root):
    dm = MNISTDataModule(str(mnist_root), download=False)
    dm.setup()
    levels, labels = dm.splits["test"]
    assert levels.shape == (2000, 1, 28, 28) and levels.dtype == torch.uint8
    raw_labels = (mnist_root / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").read_bytes()
    assert labels.tolist() == list(raw_labels[8:])
    assert len(dm.splits["train"][0]) == 7200 and len(dm.splits["val"][0]) == 800
