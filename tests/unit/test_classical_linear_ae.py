"""The linear autoencoder, trained by gradient descent, converges to the PCA subspace (principal angles)."""

import math

import lightning as L
import pytest
import torch

from genlab.data.base import TensorBatchLoader
from genlab.data.digits import DigitsDataModule
from genlab.models.classical import PCA, LinearAutoencoder

K = 4  # digits' 4th and 5th eigenvalues are well apart, so the subspace is well defined


def principal_angle_sines(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Sines of the principal angles between span(a) and span(b), a and b ``(P, K)`` (Bjorck & Golub 1973)."""
    qa, qb = torch.linalg.qr(a.double())[0], torch.linalg.qr(b.double())[0]
    cos = torch.linalg.svdvals(qa.T @ qb).clamp(max=1)
    return (1 - cos**2).sqrt()


def test_principal_angles_of_known_subspaces():
    e = torch.eye(3, dtype=torch.float64)
    assert principal_angle_sines(e[:, :2], e[:, :2]).max() == 0
    tilted = torch.stack([e[:, 0], math.cos(0.3) * e[:, 1] + math.sin(0.3) * e[:, 2]], 1)
    assert principal_angle_sines(e[:, :2], tilted).max().item() == pytest.approx(math.sin(0.3), rel=1e-12)


@pytest.mark.parametrize("tied", [True, False])
def test_linear_autoencoder_converges_to_the_pca_subspace(tied):
    dm = DigitsDataModule(representation="continuous")
    dm.setup("fit")
    x, y = dm.represent(dm.splits["train"][0]), dm.splits["train"][1]
    wider = PCA(dm.spec.to_dict(), K + 1).fit_tensor(x)
    assert wider.explained_variance[K - 1] > 1.3 * wider.explained_variance[K]  # a clear eigengap
    pca = PCA(dm.spec.to_dict(), K).fit_tensor(x)

    torch.manual_seed(0)
    model = LinearAutoencoder(dm.spec.to_dict(), K, tied=tied, lr=1e-2)
    w0 = model.decoder_weight.detach().clone()
    trainer = L.Trainer(
        max_epochs=300, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
    )  # fmt: skip
    trainer.fit(model, TensorBatchLoader(x, y, 256, lambda t: t, shuffle=True, drop_last=True))

    w = model.decoder_weight.detach()
    assert principal_angle_sines(w0, pca.components).max() > 0.9  # a random start is far from it
    assert principal_angle_sines(w, pca.components).max() < 0.05
    # the bias is only identified off the subspace: there it is the data mean
    u, db = pca.components, model.bias.detach().double() - pca.mean
    assert (db - u @ (u.T @ db)).abs().max() < 0.02
    # the reconstruction error is within 1% of PCA's optimum
    ours = model.score(x, y, "val")[0]["loss"].mean().item()
    best = pca.score(x, y, "val")[0]["loss"].mean().item()
    assert best <= ours < 1.01 * best
    if tied:  # tied optimum: W = U_K R with R orthogonal, so W^T W = I
        torch.testing.assert_close(w.T @ w, torch.eye(K), rtol=0, atol=0.02)
    assert model.encode(x).shape == (len(x), K) and model.reconstruct(x).shape == x.shape
