"""Protocol conformance of every model preset (every top-level ``conf/model/*.yaml``).

Each preset is composed in-process with Hydra (``compose("train", ["model=<name>", <shrinking
overrides>])``) and instantiated on tiny data specs of every geometry and kind: ``(1, 2, 2)`` and
``(3, 2, 2)`` images (binary, 4 levels, dequantized from 4 levels), 2-D vectors (dequantized) and
2-token text over a vocabulary of 2; presets with a ``conditional`` key also get a class-conditional
case (2 classes) on every image spec they accept. A :class:`~genlab.errors.ConfigError` means
"refused"; anything else raised while building is a defect. The cases are the accepted
(preset, spec) pairs, found at collection, so a new preset file joins the suite by existing.

Checked for every case:

1. capabilities: all in ``CAPABILITIES``; each declared one's method (``METHOD_OF``) is the class's
   own (not the base stub), each undeclared one is the base stub and raises ``NotImplementedError``
   (``fit_tensor``: absent); ``nll_kind`` is ``"none"`` exactly when ``log_prob`` is undeclared.
2. outputs (fitted first with ``fit_tensor`` for capability ``fit``; eval mode, no grad, seeded):
   ``log_prob`` ``(B,)`` finite (``<= 0`` for an exact mass); ``sample(n)`` ``(n, *shape)``, its values
   in the data's value space ({0, 1} for binary, the grid ``k / (L - 1)`` for levels, int64 ids in
   ``[0, V)`` for text, finite for dequantized); ``encode`` ``(B, latent)``; ``decode`` and
   ``reconstruct`` like ``x``; ``assign`` ``(B,)`` int64; the components (``METHOD_OF``) ``(K, P)``;
   ``generate`` extends the prompt; ``score`` returns a ``(B,)`` ``"loss"`` (differentiable in
   training for gradient models) and counts ``None`` or ``(B,)``.
3. exact discrete models: ``log_prob`` sums to 1 (float64) over every input of each enumerable spec
   (2x2 binary and 4-level images, 3x2x2 binary images, 2-token texts), per label when conditional.
4. exact continuous densities: ``log_prob`` equals ``scipy.stats.multivariate_normal`` (or a mixture
   of them) built from the fitted model's buffers, to 1e-8 relative.
5. checkpoints: a Lightning-format dict with ``state_dict`` and ``hyper_parameters`` reloads with
   ``load_from_checkpoint(weights_only=True)`` into the same model (state, ``log_prob``,
   ``reconstruct``, ``encode``, ``sample`` under the same seed); and one checkpoint written by a
   real ``lightning.Trainer`` loads the same way.
6. the preset glob finds at least the 17 known presets, and every preset accepts some spec and
   builds on every other spec or refuses it with a ConfigError.

Defects this suite found that are reported but not yet fixed are listed in ``KNOWN_DEFECTS`` and
mark their cases ``xfail(strict=True)``: once fixed, the case fails until its entry is removed.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from scipy import stats
from scipy.special import logsumexp

from genlab.data.spec import DataSpec
from genlab.errors import ConfigError
from genlab.models.base import CAPABILITIES, METHOD_OF, NLL_KINDS, GenerativeModel

CONF = Path(__file__).resolve().parents[2] / "conf"
KNOWN_PRESETS = {
    "ae_mlp", "ae_cnn", "vae_mlp", "vae_cnn", "pca", "linear_ae", "ppca", "factor_analysis", "gmm", "kmeans",
    "gpt", "gpt_tiny", "gpt_cpu", "gpt_small", "pixelcnn", "pixelrnn", "image_gpt",
}  # fmt: skip
PRESETS = sorted(p.stem for p in (CONF / "model").glob("*.yaml"))

SPECS = {
    "c1_binary": DataSpec((1, 2, 2), "binary", 2),
    "c1_levels4": DataSpec((1, 2, 2), "levels", 4),
    "c1_dequant4": DataSpec((1, 2, 2), "dequantized", 4),
    "c3_binary": DataSpec((3, 2, 2), "binary", 2),
    "c3_levels4": DataSpec((3, 2, 2), "levels", 4),
    "c3_dequant4": DataSpec((3, 2, 2), "dequantized", 4),
    "vec2_dequant4": DataSpec((2,), "dequantized", 4),
    "text2_vocab2": DataSpec((2,), "levels", 2, vocab="ab"),
}
NUM_CLASSES = 2  # of the conditional cases
#: overrides that make any preset tiny, applied where the composed ``model`` node has the key
SHRINK = {
    "latent_dim": 1,  # PPCA/factor analysis need K < P, and P = 2 for the vectors
    "encoder.hidden_dims": [4], "decoder.hidden_dims": [4], "encoder.channels": [2], "decoder.channels": [2],
    "n_layer": 1, "n_embd": 8, "n_head": 1, "block_size": 2,  # block_size: the text window
    "hidden_channels": 4, "num_layers": 1, "head_channels": 4, "input_kernel_size": 3,
    "iwae_k": 2, "num_clusters": 2, "num_mixtures": 2,
}  # fmt: skip
MOST_ENUMERATED = 4096  # inputs of the largest spec whose every input is scored (3x2x2 binary)
B = 5  # batch of the output checks
N_FIT = 32  # examples a fitted model is fitted on before its outputs are checked
TOL_MASS = 1e-5


# --- composing and building (at collection) ------------------------------------------------------
_ABSENT = object()


def _overrides(model_node: DictConfig) -> list[str]:
    out = []
    for key, value in SHRINK.items():
        if OmegaConf.select(model_node, key, default=_ABSENT) is not _ABSENT:
            out.append(f"model.{key}={value}".replace(" ", ""))
    return out


def _compose_all() -> dict[str, Any]:
    """``{preset: {variant: (overrides, cfg)}}`` (variants ``""`` and, with a ``conditional`` key, ``"cond"``),
    or the exception composing the preset raised."""
    out: dict[str, Any] = {}
    if GlobalHydra.instance().is_initialized():
        GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        for name in PRESETS:
            try:
                plain = compose(f"model/{name}")  # just the model node (cheaper): which keys it has
                overrides = [f"model={name}", *_overrides(plain.model)]
                variants = {"": overrides}
                if "conditional" in plain.model:
                    variants = {
                        "": [*overrides, "model.conditional=false"],
                        "cond": [*overrides, "model.conditional=true"],
                    }
                out[name] = {v: (tuple(o), compose("train", overrides=o)) for v, o in variants.items()}
            except Exception as e:  # noqa: BLE001 - reported by test_preset_builds_and_accepts_a_spec
                out[name] = e
    return out


def _refusal(e: BaseException) -> bool:
    """A ConfigError, raised directly or by the target inside Hydra's InstantiationException."""
    return isinstance(e, ConfigError) or isinstance(e.__cause__, ConfigError)


def _instantiate(cfg: DictConfig, spec: DataSpec) -> GenerativeModel:
    return instantiate(cfg.model, data_spec=spec.to_dict(), _recursive_=False, _convert_="all")


@dataclass(frozen=True)
class Case:
    preset: str
    spec_id: str
    spec: DataSpec
    cfg: DictConfig
    overrides: tuple[str, ...]
    cls: type

    @property
    def id(self) -> str:
        return f"{self.preset}-{self.spec_id}"

    def build(self) -> GenerativeModel:
        torch.manual_seed(0)
        return _instantiate(self.cfg, self.spec)


def _survey() -> tuple[list[Case], dict[str, dict[str, Any]]]:
    """All accepted cases, and per preset what happened on each spec ("accepted", "refused" or the error)."""
    cases: list[Case] = []
    report: dict[str, dict[str, Any]] = {}
    for name, composed in _compose_all().items():
        if isinstance(composed, BaseException):
            report[name] = {"compose": composed}
            continue
        outcome: dict[str, Any] = {}
        for variant, (overrides, cfg) in composed.items():
            for sid, spec in SPECS.items():
                if variant == "cond":
                    if spec.vocab is not None:
                        continue
                    sid, spec = f"{sid}_cond{NUM_CLASSES}", DataSpec(spec.shape, spec.kind, spec.levels, NUM_CLASSES)
                try:
                    model = _instantiate(cfg, spec)
                except Exception as e:  # noqa: BLE001
                    outcome[sid] = "refused" if _refusal(e) else e
                    continue
                outcome[sid] = "accepted"
                cases.append(Case(name, sid, spec, cfg, overrides, type(model)))
        report[name] = outcome
    return cases, report


CASES, SURVEY = _survey()


#: Defects found by this suite and reported, not yet fixed: ``(check, model class, which specs, reason)``.
#: Each marks its cases ``xfail(strict=True)``, so a fix turns them into failures until the entry is removed.
KNOWN_DEFECTS: list[tuple] = []


def cases(check: str, where=lambda c: True) -> Any:
    """Parametrise ``case`` over the accepted cases that ``where`` selects, with the known defects of ``check``."""
    params = []
    for c in CASES:
        if not where(c):
            continue
        reasons = [
            r for chk, cls, specs, r in KNOWN_DEFECTS if chk == check and c.cls.__name__ == cls and specs(c.spec)
        ]
        marks = [pytest.mark.xfail(strict=True, reason="; ".join(reasons))] if reasons else []
        params.append(pytest.param(c, id=c.id, marks=marks))
    return pytest.mark.parametrize("case", params)


# --- data ------------------------------------------------------------------------------------------
def make_data(spec: DataSpec, n: int, seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``n`` random examples on the spec's grid: ids for text, ``k / (L-1)``, ``{0, 1}`` or ``(k + u) / L``."""
    g = torch.Generator().manual_seed(seed)
    k = torch.randint(spec.levels, (n, *spec.shape), generator=g)
    if spec.vocab is not None:
        return k
    if spec.kind == "dequantized":
        return ((k + torch.rand(k.shape, generator=g, dtype=torch.float64)) / spec.levels).to(dtype)
    return (k.to(dtype) / (spec.levels - 1)).to(dtype)


def labels_for(spec: DataSpec, x: torch.Tensor, seed: int = 1) -> torch.Tensor | None:
    """What a batch carries beside ``x``: next-token targets for text, class labels, or nothing."""
    g = torch.Generator().manual_seed(seed)
    if spec.vocab is not None:
        return torch.randint(spec.levels, x.shape, generator=g)
    if spec.num_classes:
        return torch.randint(spec.num_classes, (len(x),), generator=g)
    return None


def all_inputs(spec: DataSpec) -> torch.Tensor:
    """Every input of an enumerable spec, ``(L^D, *shape)``: ids for text, values for images (float64)."""
    grid = torch.tensor(list(itertools.product(range(spec.levels), repeat=spec.num_dims)))
    grid = grid.view(-1, *spec.shape)
    return grid if spec.vocab is not None else grid.double() / (spec.levels - 1)


def enumerable(spec: DataSpec) -> bool:
    return spec.kind != "dequantized" and spec.levels**spec.num_dims <= MOST_ENUMERATED


def ready(case: Case) -> GenerativeModel:
    """The case's model, fitted when it is fitted from data, in eval mode."""
    model = case.build()
    if "fit" in model.capabilities:
        before = {k: v.clone() for k, v in model.state_dict().items()}
        model.fit_tensor(make_data(case.spec, N_FIT, seed=7))
        changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
        assert changed, f"{case.id}: fit_tensor changed no buffer"
    return model.eval()


def _base(method: str) -> Any:
    return getattr(GenerativeModel, method, None)


# --- 6. the glob and the presets -------------------------------------------------------------------
def test_glob_finds_the_known_presets():
    missing = KNOWN_PRESETS - set(PRESETS)
    assert not missing, f"conf/model/*.yaml lacks the presets {sorted(missing)}"


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_builds_and_accepts_a_spec(preset):
    outcome = SURVEY[preset]
    assert "compose" not in outcome, f"model={preset} does not compose: {outcome.get('compose')!r}"
    errors = {sid: f"{type(e).__name__}: {e}" for sid, e in outcome.items() if isinstance(e, BaseException)}
    assert not errors, f"model={preset} raised something other than a ConfigError: {errors}"
    accepted = [sid for sid, o in outcome.items() if o == "accepted"]
    assert accepted, f"model={preset} refuses every spec: {sorted(outcome)}"


# --- 1. declared capabilities and methods agree --------------------------------------------------
def _dummy_call(model: GenerativeModel, cap: str, x: torch.Tensor) -> None:
    """Call the method of ``cap`` with arguments of the right kind."""
    args = {"sample": (2,), "decode": (torch.zeros(len(x), 1),), "generate": (torch.zeros(1, 1, dtype=torch.long), 1),
            "components": (), "fit": (x,)}.get(cap, (x,))  # fmt: skip
    getattr(model, METHOD_OF[cap])(*args)


@cases("capabilities")
def test_capabilities_match_methods(case):
    model = case.build().eval()
    cls = type(model)
    declared = model.capabilities
    assert isinstance(cls.capabilities, frozenset) and isinstance(declared, frozenset)
    assert set(declared) <= set(CAPABILITIES), f"unknown capabilities {set(declared) - set(CAPABILITIES)}"
    assert declared - cls.capabilities <= {"conditional"}, "an instance may add only 'conditional'"
    assert cls.capabilities <= declared
    assert model.nll_kind in NLL_KINDS and model.describe()["nll_kind"] == model.nll_kind
    assert (model.nll_kind == "none") == ("log_prob" not in declared), (model.nll_kind, sorted(declared))
    assert all(model.can(c) == (c in declared) for c in CAPABILITIES)
    with pytest.raises(ValueError):
        model.can("likelihood")
    assert ("conditional" in declared) == ("_cond" in case.spec_id)
    if "conditional" in declared:
        assert {"log_prob", "sample"} <= declared

    x = make_data(case.spec, B)
    problems = []
    for cap, method in METHOD_OF.items():
        if method is None:
            continue
        own = getattr(cls, method, None)
        if cap in declared:
            if own is None or own is _base(method):
                problems.append(
                    f"declares {cap!r} but {cls.__name__}.{method} is {'absent' if own is None else 'the base stub'}"
                )
        elif _base(method) is None:
            if own is not None:
                problems.append(f"has {method} but does not declare {cap!r}")
        elif own is not _base(method):
            problems.append(f"overrides {method} but does not declare {cap!r}")
        else:
            try:
                with torch.no_grad():
                    _dummy_call(model, cap, x)
                problems.append(f"undeclared {method} returned instead of raising NotImplementedError")
            except NotImplementedError:
                pass
    assert not problems, f"{case.id}: " + "; ".join(problems)


# --- 2. output shapes and value ranges -----------------------------------------------------------
def check_values(spec: DataSpec, s: torch.Tensor, what: str, on_grid: bool = True) -> None:
    """Token ids in ``[0, V)``; else finite floats, in ``[0, 1]`` unless dequantized, and on the data's grid
    when ``on_grid`` (draws of a likelihood; a model without one returns decodes, means in ``[0, 1]``)."""
    if spec.vocab is not None:
        assert s.dtype == torch.int64, f"{what}: token ids must be int64, got {s.dtype}"
        assert int(s.min()) >= 0 and int(s.max()) < spec.levels, f"{what}: ids outside [0, {spec.levels})"
        return
    assert s.is_floating_point(), f"{what}: dtype {s.dtype}"
    assert bool(torch.isfinite(s).all()), f"{what}: non-finite values"
    if spec.kind == "dequantized":
        return  # a density's samples may leave [0, 1] (Gaussians)
    assert float(s.min()) >= 0.0 and float(s.max()) <= 1.0, f"{what}: values outside [0, 1]"
    if not on_grid:
        return
    k = s.double() * (spec.levels - 1)
    off = float((k - k.round()).abs().max())
    assert off < 1e-5, f"{what}: values off the {spec.kind} grid k/{spec.levels - 1} by up to {off:.3g}"


def code_size(model: GenerativeModel) -> int | None:
    """The width ``encode`` must have, from the hparam that sets it (``None``: none of them)."""
    for key in ("latent_dim", "num_clusters", "num_mixtures"):
        if key in model.hparams:
            return model.hparams[key]
    return None


@cases("outputs")
def test_outputs_have_protocol_shapes_and_values(case):
    spec = case.spec
    model = ready(case)
    caps = model.capabilities
    x = make_data(spec, B, seed=3)
    y = labels_for(spec, x)
    torch.manual_seed(0)
    with torch.no_grad():
        if "log_prob" in caps:
            lp = model.log_prob(x)
            assert lp.shape == (B,) and lp.is_floating_point(), (lp.shape, lp.dtype)
            assert bool(torch.isfinite(lp).all()), lp
            if model.nll_kind == "exact" and spec.kind != "dequantized":
                assert bool((lp <= 1e-6).all()), f"log mass above 0: {lp}"
            if "conditional" in caps:
                lpc = model.log_prob(x, condition=y)
                assert lpc.shape == (B,) and bool(torch.isfinite(lpc).all())
        if "sample" in caps:
            s = model.sample(4)
            assert s.shape == (4, *spec.shape), s.shape
            assert bool(torch.isfinite(s.double()).all())
            if "conditional" in caps:
                assert model.sample(4, condition=torch.tensor([1, 0, 1, 1])).shape == (4, *spec.shape)
        if "encode" in caps:
            z = model.encode(x)
            assert z.dim() == 2 and z.shape[0] == B and z.shape[1] >= 1, z.shape
            if code_size(model) is not None:
                assert z.shape[1] == code_size(model), f"codes {tuple(z.shape)}, expected {code_size(model)} wide"
            assert z.is_floating_point() and bool(torch.isfinite(z).all())
            if "decode" in caps:
                for codes in (z, torch.randn_like(z)):
                    d = model.decode(codes)
                    assert d.shape == x.shape and d.dtype == x.dtype, (d.shape, d.dtype)
                    assert bool(torch.isfinite(d).all())
        if "reconstruct" in caps:
            r = model.reconstruct(x)
            assert r.shape == x.shape and r.dtype == x.dtype, (r.shape, r.dtype)
            assert bool(torch.isfinite(r).all())
        if "assign" in caps:
            a = model.assign(x)
            assert a.shape == (B,) and a.dtype == torch.int64, (a.shape, a.dtype)
            assert int(a.min()) >= 0
            if "encode" in caps:
                assert int(a.max()) < model.encode(x).shape[1]  # a cluster index, one of the code's K
        if "components" in caps:
            w = getattr(model, METHOD_OF["components"])()
            assert w.dim() == 2 and w.shape[0] >= 1 and w.shape[1] == spec.num_dims, w.shape
            if "latent_dim" in model.hparams:
                assert w.shape[0] == model.hparams["latent_dim"], w.shape
            assert bool(torch.isfinite(w).all())
        if "generate" in caps:
            prompt = x[:, :1] if spec.vocab is not None else torch.zeros(B, 1, dtype=torch.long)
            g = model.generate(prompt, 3)
            assert g.shape == (B, 4) and g.dtype == torch.int64, (g.shape, g.dtype)
            assert torch.equal(g[:, :1], prompt)
            assert int(g.min()) >= 0 and int(g.max()) < spec.levels
    for stage in ("train", "val", "test"):
        sums, counts = model.score(x, y, stage)
        assert isinstance(sums, dict) and "loss" in sums, sorted(sums)
        for name, v in sums.items():
            assert v.shape == (B,), f"score[{stage}][{name}] has shape {tuple(v.shape)}"
            assert bool(torch.isfinite(v).all()), f"score[{stage}][{name}] = {v}"
        assert counts is None or counts.shape == (B,), counts
        if stage == "train" and any(p.requires_grad for p in model.parameters()):
            assert sums["loss"].requires_grad, "the training loss of a gradient model has no gradient"


@cases("samples", lambda c: "sample" in c.cls.capabilities)
def test_samples_lie_in_the_data_value_space(case):
    model = ready(case)
    torch.manual_seed(0)
    with torch.no_grad():
        # a likelihood's draws lie in the data's value space; a model without one samples decodes in [0, 1]
        check_values(case.spec, model.sample(16), "sample", on_grid=model.can("log_prob"))
        if "conditional" in model.capabilities:
            check_values(case.spec, model.sample(4, condition=torch.tensor([1, 0, 1, 1])), "conditional sample")


# --- 3. exact discrete models: the mass sums to 1 -------------------------------------------------
@cases("mass", lambda c: c.cls.nll_kind == "exact" and enumerable(c.spec))
def test_exact_mass_sums_to_one(case):
    model = case.build().double().eval()
    x = all_inputs(case.spec)
    with torch.no_grad():
        total = float(torch.logsumexp(model.log_prob(x).double(), 0))
        assert abs(total) < TOL_MASS, f"log sum_x P(x) = {total} over {len(x)} inputs"
        if "conditional" in model.capabilities:
            for c in range(case.spec.num_classes):
                lp = model.log_prob(x, condition=torch.full((len(x),), c))
                total = float(torch.logsumexp(lp.double(), 0))
                assert abs(total) < TOL_MASS, f"log sum_x P(x | y={c}) = {total}"


# --- 4. exact continuous densities against scipy --------------------------------------------------
def scipy_log_density(model: GenerativeModel, x: np.ndarray) -> np.ndarray:
    """``log p(x)`` from the fitted model's buffers, computed by scipy."""
    b = {k: v.double().numpy() for k, v in model.named_buffers()}
    p = x.shape[1]
    if {"weights", "means", "covariances_cholesky"} <= b.keys():  # Gaussian mixture
        c = b["covariances_cholesky"]
        covs = {"full": lambda: c @ np.swapaxes(c, 1, 2), "diag": lambda: np.stack([np.diag(v**2) for v in c]),
                "spherical": lambda: np.stack([v**2 * np.eye(p) for v in c])}[model.covariance_type]()  # fmt: skip
        parts = [
            np.log(w) + stats.multivariate_normal(m, s).logpdf(x) for w, m, s in zip(b["weights"], b["means"], covs)
        ]
        return logsumexp(np.stack(parts), axis=0)
    if {"mean", "loadings", "noise_variance"} <= b.keys():  # PPCA / factor analysis: N(mu, W W^T + Psi)
        w = b["loadings"]
        cov = w @ w.T + np.diag(np.broadcast_to(b["noise_variance"], (p,)))
        return stats.multivariate_normal(b["mean"], cov).logpdf(x)
    pytest.fail(f"no scipy reference for the exact density {type(model).__name__}: add one to this test")


def correlated(spec: DataSpec, n: int, seed: int) -> torch.Tensor:
    """Dequantized-range data in ``[0, 1)`` whose features are correlated (so loadings are not trivial)."""
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(n, 1, generator=g, dtype=torch.float64)
    noise = torch.rand(n, spec.num_dims, generator=g, dtype=torch.float64)
    return (0.7 * base + 0.3 * noise).view(n, *spec.shape)


@cases("scipy", lambda c: c.spec.kind == "dequantized" and c.cls.nll_kind == "exact")
def test_exact_density_equals_scipy(case):
    variants = [case.cfg]
    if "covariance_type" in case.cfg.model:  # every covariance structure, not only the preset's
        variants = []
        for kind in ("full", "diag", "spherical"):
            cfg = case.cfg.copy()
            cfg.model.covariance_type = kind
            variants.append(cfg)
    for cfg in variants:
        torch.manual_seed(0)
        model = _instantiate(cfg, case.spec).eval()
        if "fit" in model.capabilities:
            model.fit_tensor(correlated(case.spec, 300, seed=5))
        x = correlated(case.spec, 40, seed=6)
        with torch.no_grad():
            lp = model.log_prob(x).double().numpy()
        ref = scipy_log_density(model, x.flatten(1).numpy())
        assert np.ptp(ref) > 0.1  # a fitted, non-degenerate density: points differ
        np.testing.assert_allclose(lp, ref, rtol=1e-8, atol=0, err_msg=str(OmegaConf.to_container(cfg.model)))


# --- 5. checkpoints -------------------------------------------------------------------------------
def outputs(model: GenerativeModel, x: torch.Tensor) -> dict[str, torch.Tensor]:
    out = {}
    with torch.no_grad():
        for cap, call in (("log_prob", lambda: model.log_prob(x)), ("reconstruct", lambda: model.reconstruct(x)),
                          ("encode", lambda: model.encode(x)), ("sample", lambda: model.sample(3))):  # fmt: skip
            if cap in model.capabilities:
                torch.manual_seed(11)
                out[cap] = call()
    return out


def assert_same_model(a: GenerativeModel, b: GenerativeModel, x: torch.Tensor) -> None:
    assert type(a) is type(b) and a.spec == b.spec and a.capabilities == b.capabilities
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys(), sa.keys() ^ sb.keys()
    for k in sa:
        assert sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]), f"state {k} differs after loading"
    oa, ob = outputs(a, x), outputs(b, x)
    assert oa.keys() == ob.keys()
    for k in oa:
        assert torch.equal(oa[k], ob[k]), f"{k} differs after loading"


@cases("checkpoint")
def test_checkpoint_round_trips_with_weights_only(case, tmp_path):
    model = ready(case)
    path = tmp_path / "model.ckpt"
    hparams = dict(model.hparams)
    assert hparams["data_spec"] == case.spec.to_dict()
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": hparams,
                "pytorch-lightning_version": lightning.__version__}, path)  # fmt: skip
    torch.load(path, weights_only=True)  # plain types only
    loaded = type(model).load_from_checkpoint(path, map_location="cpu", weights_only=True).eval()
    assert_same_model(model, loaded, make_data(case.spec, B, seed=4))


def test_trainer_checkpoint_loads_with_weights_only(tmp_path):
    found = [c for c in CASES if c.preset == "vae_mlp" and c.spec_id == "c1_binary"]
    assert len(found) == 1, "vae_mlp must accept (1, 2, 2) binary images"
    case = found[0]
    model = case.build()
    x = make_data(case.spec, 16, seed=2)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, torch.zeros(16, dtype=torch.long)), 8)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = lightning.Trainer(
        max_steps=1, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(model, train_dataloaders=loader)
    assert any(not torch.equal(v, before[k]) for k, v in model.state_dict().items()), "the step changed nothing"
    path = tmp_path / "trainer.ckpt"
    trainer.save_checkpoint(path)
    ckpt = torch.load(path, weights_only=True)
    assert {"state_dict", "hyper_parameters", "pytorch-lightning_version"} <= ckpt.keys()
    loaded = type(model).load_from_checkpoint(path, map_location="cpu", weights_only=True).eval()
    assert_same_model(model.eval(), loaded, make_data(case.spec, B, seed=4))


#: the capabilities whose methods test_outputs_have_protocol_shapes_and_values (and ready) call
CHECKED_CAPABILITIES = {
    "log_prob", "sample", "encode", "decode", "reconstruct", "generate", "assign", "components", "conditional", "fit",
}  # fmt: skip


def test_suite_checks_every_capability():
    new = set(CAPABILITIES) - CHECKED_CAPABILITIES
    assert not new, f"capabilities {sorted(new)} have no output check in this suite: add one"


def test_every_case_id_is_unique_and_cases_cover_each_kind():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids))
    kinds = {(c.spec.kind, c.spec.vocab is not None) for c in CASES}
    assert kinds >= {("binary", False), ("levels", False), ("dequantized", False), ("levels", True)}, kinds
    assert any("_cond" in c.spec_id for c in CASES), "no conditional case"
