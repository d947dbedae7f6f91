"""Variational autoencoder (Kingma & Welling 2014) with an importance-weighted test bound (Burda et al. 2016)."""

from __future__ import annotations

import math
from typing import Any

import torch

from genlab.checks import non_negative, positive_int
from genlab.data.spec import DataSpec
from genlab.errors import ConfigError
from genlab.models.base import GenerativeModel
from genlab.models.code_priors import CodePrior, CodePriorMixin
from genlab.nn.likelihoods import make_likelihood, soft_clamp
from genlab.nn.mlp import MLPDecoder, MLPEncoder
from genlab.utils.config import build, config_of, plain

LOGVAR_MIN, LOGVAR_MAX = -12.0, 8.0
LOG_2PI = math.log(2 * math.pi)


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """``KL(N(mu, diag(exp(logvar))) || N(0, I))`` in nats, summed over the last dim: ``(B, L) -> (B,)``.

    Closed form (Kingma & Welling 2014, Appendix B): ``0.5 * sum(mu^2 + exp(logvar) - 1 - logvar)``.
    """
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(-1)


def diag_normal_log_prob(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """``log N(z; mu, diag(exp(logvar)))`` in nats, summed over the last dim."""
    return -0.5 * (LOG_2PI + logvar + (z - mu).pow(2) * torch.exp(-logvar)).sum(-1)


class VAE(CodePriorMixin, GenerativeModel):
    """Gaussian-latent VAE; its encoder and decoder are networks given as config.

    Posterior ``q(z|x) = N(mu(x), diag(exp(logvar(x))))`` (log-variance soft-clamped to
    ``[-12, 8]``), prior ``N(0, I)``, observation model from :mod:`genlab.nn.likelihoods`
    (``auto``: Bernoulli for binarized data, discretized logistic for 8-bit levels, Gaussian for
    dequantized data).

    Training minimises ``-(E_q[log p(x|z)] - beta_t * KL)`` per example, with ``beta_t`` rising
    linearly from 0 to ``beta`` over ``beta_warmup_steps`` (Bowman et al. 2016). Validation reports
    the ELBO (``beta = 1``): ``val/nll_nats = -ELBO`` is an upper bound on the NLL, and ``val/loss``
    equals it. The test NLL (``log_prob``) is the importance-weighted bound with ``iwae_k`` samples
    (Burda et al. 2016, Eq. 8): ``log (1/k) sum_i p(x, z_i) / q(z_i | x)``, a lower bound on
    ``log p(x)`` that tightens as ``k`` grows; ``k = 1`` is a single-sample ELBO.

    Args:
        data_spec: the data description.
        encoder: ``_target_`` config of a network ``(B, *shape) -> (B, 2 * latent_dim)`` (mean and
            log-variance), built with ``shape`` and ``out_features`` filled in, e.g.
            ``{"_target_": "genlab.nn.mlp.MLPEncoder", "hidden_dims": [512, 256]}`` (the default) or
            ``genlab.nn.conv.ConvEncoder`` with ``channels``. Stored as given, a plain dict.
        decoder: ``_target_`` config of a network ``(B, latent_dim) -> (B, num_params, *shape)``,
            built with ``latent_dim``, ``shape`` and ``num_params`` (the likelihood's parameters per
            dimension) filled in; default ``genlab.nn.mlp.MLPDecoder`` with ``hidden_dims: [256, 512]``.
        latent_dim: size of ``z`` (> 0).
        likelihood: ``auto``, ``bernoulli``, ``discretized_logistic`` or ``gaussian``.
        learn_variance: Gaussian likelihood only: decoder learns a per-pixel variance, else ``std``.
        std: fixed standard deviation of the Gaussian likelihood.
        beta: KL weight (``beta``-VAE, Higgins et al. 2017); 1 is the true ELBO.
        beta_warmup_steps: linear warm-up of ``beta`` over this many optimizer steps (0: none).
        iwae_k: importance samples for the test bound (>= 1).
        iwae_batch: most decoder evaluations per chunk when computing the bound (memory cap).
        conditional: a conditional VAE (Sohn et al. 2015): ``q(z | x, y)`` and ``p(x | z, y)``, the label
            (one-hot) given to the encoder as extra channels and to the decoder beside ``z``; declares
            ``conditional``. Training and validation use the labels; ``log_prob(x)`` is the marginal.
        code_prior: where ``sample`` draws its codes: ``normal`` (the prior), or ``hull`` / ``gmm`` of the
            training codes' posterior means (:mod:`genlab.models.code_priors`; unconditional models only).
        code_mixtures: components of the ``gmm`` code prior.
        base: ``lr``, ``weight_decay``, ``optimizer``, ``scheduler``, ``compile`` (:class:`GenerativeModel`).

    Raises:
        ConfigError: for non-positive ``latent_dim``/``iwae_k``, negative ``beta``, an unknown
            ``likelihood`` or one that cannot score the data kind, or an encoder/decoder config that
            cannot be built (naming ``model.encoder`` / ``model.decoder``, e.g. a CNN on flat data).
    """

    nll_kind = "bound"
    capabilities = frozenset({"log_prob", "sample", "encode", "decode", "reconstruct"})

    def __init__(
        self,
        data_spec: DataSpec | dict[str, Any],
        encoder: dict[str, Any] | None = None,
        decoder: dict[str, Any] | None = None,
        latent_dim: int = 16,
        likelihood: str = "auto",
        learn_variance: bool = True,
        std: float = 0.1,
        beta: float = 1.0,
        beta_warmup_steps: int = 0,
        iwae_k: int = 100,
        iwae_batch: int = 8192,
        conditional: bool = False,
        code_prior: str = "normal",
        code_mixtures: int = 10,
        **base: Any,
    ) -> None:
        super().__init__(data_spec, **base)
        self.refuse_tokens()
        self.latent_dim = positive_int("model.latent_dim", latent_dim)
        self.iwae_k = positive_int("model.iwae_k", iwae_k)
        self.iwae_batch = positive_int("model.iwae_batch", iwae_batch)
        self.beta = non_negative("model.beta", beta)
        self.beta_warmup_steps = int(non_negative("model.beta_warmup_steps", beta_warmup_steps))
        encoder = plain(encoder) if encoder is not None else config_of(MLPEncoder, hidden_dims=[512, 256])
        decoder = plain(decoder) if decoder is not None else config_of(MLPDecoder, hidden_dims=[256, 512])
        self.save_model_hparams()  # stores encoder/decoder as the plain dicts above
        self.likelihood = make_likelihood(likelihood, self.spec, learn_variance=learn_variance, std=std)
        self.declare_conditional(conditional)
        self.code_prior = CodePrior(code_prior, self.latent_dim, code_mixtures)
        if conditional and code_prior != "normal":
            raise ConfigError("model.code_prior applies to unconditional VAEs; use model.code_prior=normal")
        shape, k = self.spec.shape, self.num_classes or 0
        in_shape = (shape[0] + k, *shape[1:])  # a conditional encoder sees the label as k more channels
        self.encoder = build(encoder, "model.encoder", shape=in_shape, out_features=2 * latent_dim)
        self.decoder = build(
            decoder, "model.decoder", latent_dim=latent_dim + k, shape=shape, num_params=self.likelihood.num_params
        )

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "iwae_k": self.iwae_k}

    # --- pieces ----------------------------------------------------------------------------
    def _one_hot(self, y: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.one_hot(y, self.num_classes).to(like.dtype)

    def posterior(self, x: torch.Tensor, y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, *shape)`` (and labels ``(B,)`` when conditional) ``-> (mu, logvar)``, each ``(B, latent_dim)``."""
        if y is not None:  # the label as extra channels (or features, for flat data)
            h = self._one_hot(y, x).view(len(x), -1, *([1] * (x.dim() - 2)))
            x = torch.cat([x, h.expand(-1, -1, *x.shape[2:])], 1)
        mu, logvar = self.encoder(x).chunk(2, dim=-1)
        return mu, soft_clamp(logvar, LOGVAR_MIN, LOGVAR_MAX)

    def decoder_params(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, latent_dim)`` (and labels ``(B,)`` when conditional) ``-> (B, num_params, *shape)``."""
        return self.decoder(z if y is None else torch.cat([z, self._one_hot(y, z)], -1))

    def elbo_terms(self, x: torch.Tensor, y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """One-sample reconstruction term ``log p(x|z)`` and analytic KL, each ``(B,)`` in nats."""
        mu, logvar = self.posterior(x, y)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        return self.likelihood.log_prob(self.decoder_params(z, y), x), gaussian_kl(mu, logvar)

    def infer_labels(self, x: torch.Tensor) -> torch.Tensor:
        """A conditional model's most likely class of each ``x``: ``(B,)``, the argmax over ``y`` of the ELBO
        of ``log p(x | y)`` evaluated at the posterior mean (deterministic)."""
        scores = []
        for c in range(self.num_classes):
            y = torch.full((len(x),), c, device=x.device, dtype=torch.long)
            mu, logvar = self.posterior(x, y)
            scores.append(self.likelihood.log_prob(self.decoder_params(mu, y), x) - gaussian_kl(mu, logvar))
        return torch.stack(scores).argmax(0)

    def _labels_of(self, x: torch.Tensor, condition: torch.Tensor | None) -> torch.Tensor | None:
        if self.conditional and condition is None:
            return self.infer_labels(x)
        return self.labels(len(x), condition)

    def log_weights(self, x: torch.Tensor, k: int, y: torch.Tensor | None = None) -> torch.Tensor:
        """``log p(x, z_i) - log q(z_i | x)`` for ``k`` posterior samples per example: ``(k, B)`` nats."""
        mu, logvar = self.posterior(x, y)
        std = torch.exp(0.5 * logvar)
        b = len(x)
        eps = torch.randn(k, *mu.shape, device=mu.device, dtype=mu.dtype)  # drawn up front: chunking-invariant
        chunk = max(1, self.iwae_batch // b)
        out = []
        for start in range(0, k, chunk):
            m = min(chunk, k - start)
            z = mu + std * eps[start : start + m]  # (m, B, L)
            params = self.decoder_params(z.reshape(m * b, -1), None if y is None else y.repeat(m))
            log_px = self.likelihood.log_prob(params, x.repeat(m, *([1] * (x.dim() - 1)))).view(m, b)
            log_pz = -0.5 * (LOG_2PI + z.pow(2)).sum(-1)
            out.append(log_px + log_pz - diag_normal_log_prob(z, mu, logvar))
        return torch.cat(out)

    def iwae_bound(self, x: torch.Tensor, k: int, y: torch.Tensor | None = None) -> torch.Tensor:
        """Importance-weighted lower bound on ``log p(x)`` (``log p(x | y)``) with ``k`` samples: ``(B,)`` nats."""
        return torch.logsumexp(self.log_weights(x, k, y), dim=0) - math.log(k)

    def current_beta(self) -> float:
        """``beta`` after linear warm-up at the current optimizer step."""
        if self.beta_warmup_steps == 0:
            return self.beta
        return self.beta * min(1.0, (self.global_step + 1) / self.beta_warmup_steps)

    # --- the protocol ------------------------------------------------------------------------
    @torch.no_grad()
    def log_prob(self, x: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        """IWAE lower bound on ``log p(x)`` (or ``log p(x | condition)``) with ``iwae_k`` samples: ``(B,)`` nats
        (``nll_kind = "bound"``). A conditional model without ``condition`` bounds the marginal under a uniform
        class prior, ``log (1/N) sum_y p(x | y)``, from one bound per class."""
        if self.conditional and condition is None:
            full = [torch.full((len(x),), c, device=x.device) for c in range(self.num_classes)]
            bounds = torch.stack([self.iwae_bound(x, self.iwae_k, y) for y in full])
            return torch.logsumexp(bounds, dim=0) - math.log(self.num_classes)
        return self.iwae_bound(x, self.iwae_k, self.labels(len(x), condition))

    @torch.no_grad()
    def sample(self, n: int, condition: torch.Tensor | None = None) -> torch.Tensor:
        """``z`` from ``code_prior`` (default the prior ``N(0, I)``), ``x ~ p(x | z)`` (``p(x | z, y)``; a
        conditional model without ``condition`` cycles the classes): ``(n, *shape)`` in the data's value space."""
        y = self.labels(n, condition)
        z = self.sample_codes(n)
        return self.likelihood.sample(self.decoder_params(z, y))

    def encode(self, x: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        """Posterior mean ``E[z | x]`` (``E[z | x, y]``; without ``condition`` a conditional model uses
        :meth:`infer_labels`): ``(B, latent_dim)``."""
        return self.posterior(x, self._labels_of(x, condition))[0]

    def decode(self, z: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        """Mean of ``p(x | z)`` (``p(x | z, y)``, classes cycled without ``condition``) for codes
        ``(B, latent_dim)``: ``(B, *shape)`` in ``[0, 1]``."""
        return self.likelihood.mean(self.decoder_params(z, self.labels(len(z), condition)))

    def reconstruct(self, x: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        """Mean of ``p(x | z = E[z|x])`` (with the label given or inferred): like ``x``, in ``[0, 1]``."""
        y = self._labels_of(x, condition)
        return self.likelihood.mean(self.decoder_params(self.posterior(x, y)[0], y))

    def score(self, x: torch.Tensor, y: torch.Tensor | None, stage: str):
        """Per example, nats: train ``-(E_q log p(x|z) - beta_t KL)``; val ``loss = nll_nats = -ELBO``, with
        ``elbo_nats`` and ``kl_nats``; test the same without ``nll_nats``, which the adapter takes from
        :meth:`log_prob` (the IWAE bound)."""
        rec, kl = self.elbo_terms(x, y if self.conditional else None)
        elbo = rec - kl
        if stage == "train":
            return {"loss": -(rec - self.current_beta() * kl)}, None
        if self.conditional:  # a bound on log p(x | y): not the marginal, which the test stage adds
            return {"loss": -elbo, "cond_elbo_nats": elbo, "kl_nats": kl}, None
        sums = {"loss": -elbo, "elbo_nats": elbo, "kl_nats": kl}
        if stage != "test":
            sums["nll_nats"] = -elbo
        return sums, None
