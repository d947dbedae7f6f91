"""PCA against scikit-learn (the reference) on real digits and MNIST; streaming and exact identities."""

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA as SkPCA

from genlab.data.digits import DigitsDataModule
from genlab.data.vision import MNISTDataModule
from genlab.errors import DataError
from genlab.models.classical import PCA


def train_tensor(dm, seed=0):
    """The training split of ``dm`` as one fixed float tensor (seeded noise when dequantized)."""
    dm.setup("fit")
    return dm.represent(dm.splits["train"][0], generator=torch.Generator().manual_seed(seed))


def assert_matches_sklearn(x, spec, k):
    """Fit ours and sklearn's exact PCA on ``x``; components equal up to sign, variances to 1e-5 relative."""
    model = PCA(spec, k).fit_tensor(x)
    ref = SkPCA(k, svd_solver="full").fit(x.flatten(1).double().numpy())
    ours = model.components.numpy().T  # (K, P) like sklearn
    signs = np.sign((ours * ref.components_).sum(1, keepdims=True))
    np.testing.assert_allclose(ours, signs * ref.components_, atol=1e-7)
    np.testing.assert_allclose(model.explained_variance.numpy(), ref.explained_variance_, rtol=1e-5)
    np.testing.assert_allclose(model.explained_variance_ratio.numpy(), ref.explained_variance_ratio_, rtol=1e-5)
    np.testing.assert_allclose(model.mean.numpy(), ref.mean_, atol=1e-12)
    # columns orthonormal, eigenvalues descending
    np.testing.assert_allclose(ours @ ours.T, np.eye(k), atol=1e-10)
    assert np.all(np.diff(model.explained_variance.numpy()) <= 0)
    return model, ref, signs[:, 0]


def test_pca_matches_sklearn_on_digits():
    dm = DigitsDataModule()
    x = train_tensor(dm)
    model, ref, signs = assert_matches_sklearn(x, dm.spec.to_dict(), 10)
    flat = x.flatten(1).double()
    np.testing.assert_allclose(model.encode(flat).numpy(), ref.transform(flat.numpy()) * signs, atol=1e-9)


def test_pca_matches_sklearn_on_mnist(mnist_root):
    dm = MNISTDataModule(str(mnist_root), download=False)
    x = train_tensor(dm)
    assert x.shape == (7200, 1, 28, 28)
    assert_matches_sklearn(x, dm.spec.to_dict(), 20)


def test_streamed_batches_give_the_one_batch_fit():
    x = train_tensor(DigitsDataModule())
    spec = DigitsDataModule().spec.to_dict()
    whole = PCA(spec, 5).fit_tensor(x)
    streamed = PCA(spec, 5).fit_tensor(x, batch_size=97)
    for name in ("mean", "components", "explained_variance"):
        torch.testing.assert_close(getattr(streamed, name), getattr(whole, name), rtol=1e-10, atol=1e-12)
    assert int(streamed.n_iter) == 1 and bool(streamed.converged)


def test_encode_reconstruct_are_the_projection():
    x = train_tensor(DigitsDataModule())
    spec = DigitsDataModule().spec.to_dict()
    model = PCA(spec, 8).fit_tensor(x)
    d = x.flatten(1).double() - model.mean
    w = model.components
    torch.testing.assert_close(model.encode(x.double()), d @ w)
    torch.testing.assert_close(model.reconstruct(x.double()).flatten(1), d @ w @ w.T + model.mean)
    assert model.reconstruct(x).shape == x.shape and model.reconstruct(x).dtype == torch.float32
    # codes back to data: decode(encode(x)) is the projection; the component vectors are the rows of W^T
    z = model.encode(x.double())
    torch.testing.assert_close(model.decode(z), model.reconstruct(x.double()))
    assert model.decode(z.float()).dtype == torch.float32 and model.decode(z).shape == x.shape
    torch.testing.assert_close(model.component_vectors(), w.T, rtol=0, atol=0)
    with pytest.raises(DataError, match="8 values"):
        model.decode(torch.zeros(3, 7))
    # val/loss is the squared reconstruction error summed over features
    loss, counts = model.score(x.double(), None, "val")
    loss = loss["loss"]
    assert counts is None
    torch.testing.assert_close(loss, (model.reconstruct(x.double()) - x.double()).flatten(1).pow(2).sum(1))
    # all components: the reconstruction is exact and the ratios sum to 1
    full = PCA(spec, 64).fit_tensor(x)
    torch.testing.assert_close(full.reconstruct(x.double()), x.double(), rtol=0, atol=1e-10)
    assert float(full.explained_variance_ratio.sum()) == pytest.approx(1.0, abs=1e-12)


def test_hand_computed_two_dimensional_case():
    # points on the line y = 2x (plus the mean (1, 1)): one component along (1, 2)/sqrt(5), variance known
    t = torch.tensor([-2.0, -1.0, 0.0, 1.0, 2.0], dtype=torch.float64)
    x = torch.stack([1 + t, 1 + 2 * t], 1)
    model = PCA({"shape": [2], "kind": "levels", "levels": 256}, 1).fit_tensor(x)
    torch.testing.assert_close(model.components[:, 0], torch.tensor([1.0, 2.0], dtype=torch.float64) / 5**0.5)
    # unbiased variance of t * sqrt(5): 5 * 10 / 4
    assert float(model.explained_variance[0]) == pytest.approx(12.5, rel=1e-12)
    assert float(model.explained_variance_ratio[0]) == pytest.approx(1.0, rel=1e-12)
    torch.testing.assert_close(model.encode(x)[:, 0], t * 5**0.5)
