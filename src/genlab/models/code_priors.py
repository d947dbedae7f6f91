"""Where a latent-variable model draws the codes it decodes into samples: ``model.code_prior``.

* ``normal``: ``z ~ N(0, I)``. The VAE's prior; for a deterministic autoencoder, "random darts" in a code space that
  was never asked to look like ``N(0, I)``.
* ``hull``: ``z = t z_i + (1 - t) z_j`` for two random training codes and ``t ~ U(0, 1)``: points inside the hull of
  the training codes.
* ``gmm``: a Gaussian mixture with ``code_mixtures`` full-covariance components fitted to the training codes
  (scikit-learn's ``GaussianMixture``): ex-post density estimation (Ghosh et al. 2020, "From variational to
  deterministic autoencoders", Sec. 4).

``hull`` and ``gmm`` are fitted when the test stage starts, on the codes (``encode``) of the whole training split,
so they describe the weights that are tested (a sample drawn earlier, for a grid during training, fits them to the
weights of that moment first); draws use the global torch RNG, so seeded evaluations repeat.
"""

from __future__ import annotations

from typing import Any

import torch

from genlab.checks import one_of, positive_int
from genlab.errors import ConfigError

CODE_PRIORS = ("normal", "hull", "gmm")


class CodePrior:
    """A distribution over codes of size ``latent_dim`` (see the module docstring).

    Args:
        kind: ``normal``, ``hull`` or ``gmm``.
        latent_dim: the code size.
        num_mixtures: components of ``gmm``.
        seed: seed of the mixture's fit (k-means initialisation).

    Raises:
        ConfigError: for an unknown kind or a non-positive ``num_mixtures``.
    """

    def __init__(self, kind: str, latent_dim: int, num_mixtures: int = 10, seed: int = 0) -> None:
        self.kind = one_of("model.code_prior", kind, CODE_PRIORS)
        self.latent_dim, self.seed = latent_dim, seed
        self.num_mixtures = positive_int("model.code_mixtures", num_mixtures)
        self.params: dict[str, torch.Tensor] = {}

    @property
    def needs_fit(self) -> bool:
        """Whether draws need training codes (``hull``, ``gmm``) that :meth:`fit` has not seen yet."""
        return self.kind != "normal" and not self.params

    def fit(self, codes: torch.Tensor) -> CodePrior:
        """Fit to training codes ``(N, latent_dim)``. Returns ``self``.

        Raises:
            ConfigError: for fewer codes than mixture components.
        """
        codes = codes.detach().double().cpu()
        if self.kind == "hull":
            self.params = {"codes": codes}
        elif self.kind == "gmm":
            from sklearn.mixture import GaussianMixture

            if len(codes) < self.num_mixtures:
                raise ConfigError(f"model.code_mixtures={self.num_mixtures} exceeds the {len(codes)} training codes")
            gm = GaussianMixture(self.num_mixtures, covariance_type="full", reg_covar=1e-6, random_state=self.seed)
            gm.fit(codes.numpy())
            self.params = {
                "weights": torch.as_tensor(gm.weights_),
                "means": torch.as_tensor(gm.means_),
                "cholesky": torch.linalg.cholesky(torch.as_tensor(gm.covariances_)),
            }
        return self

    def sample(self, n: int, device: Any) -> torch.Tensor:
        """``n`` codes ``(n, latent_dim)`` float32 on ``device``.

        Raises:
            ConfigError: for ``hull``/``gmm`` before :meth:`fit`.
        """
        if self.kind == "normal":
            return torch.randn(n, self.latent_dim, device=device)
        if self.needs_fit:
            raise ConfigError(f"model.code_prior={self.kind} is fitted to the training codes when testing starts; "
                              "sample after genlab.train or genlab.eval, or use model.code_prior=normal")  # fmt: skip
        p = self.params
        if self.kind == "hull":
            i, j = torch.randint(len(p["codes"]), (2, n))
            t = torch.rand(n, 1, dtype=torch.float64)
            z = t * p["codes"][i] + (1 - t) * p["codes"][j]
        else:
            k = torch.multinomial(p["weights"], n, replacement=True)
            eps = torch.randn(n, self.latent_dim, 1, dtype=torch.float64)
            z = p["means"][k] + (p["cholesky"][k] @ eps)[..., 0]
        return z.float().to(device)


class CodePriorMixin:
    """``sample_codes`` from :attr:`code_prior`, fitted on the training codes when the test stage starts.

    A model sets ``self.code_prior = CodePrior(...)`` and has ``encode`` and a DataModule with ``split_tensors``.
    """

    code_prior: CodePrior

    def fit_code_prior(self) -> None:
        """Fit :attr:`code_prior` to ``encode`` of the DataModule's whole training split (no-op for ``normal``)."""
        if self.code_prior.kind == "normal":
            return
        x = self.trainer.datamodule.split_tensors("train")[0]
        with torch.no_grad():
            z = torch.cat([self.encode(x[i : i + 512].to(self.device)).cpu() for i in range(0, len(x), 512)])
        self.code_prior.fit(z)

    def on_test_start(self) -> None:
        super().on_test_start()
        self.fit_code_prior()

    def sample_codes(self, n: int) -> torch.Tensor:
        """``n`` codes from :attr:`code_prior`: ``(n, latent_dim)`` on the model's device. Sampled during training
        (the image grids), a ``hull``/``gmm`` prior is first fitted to the current weights' codes."""
        trainer = self._trainer
        if self.code_prior.needs_fit and trainer is not None and getattr(trainer, "datamodule", None) is not None:
            self.fit_code_prior()
        return self.code_prior.sample(n, self.device)
