"""The fast paths give the numbers of the straightforward code they replaced.

* the sampler forms ``x = M(z + ξ'')`` from the nonzeros of ``z + ξ''`` instead of a dense
  ``(n × D) @ Mᵀ`` (the reference below is that dense code, kept verbatim);
* the smoothed activation's ``exp`` avoids float32's slow path for underflowing arguments;
* the weight gradient scales ``x`` instead of ``c``;
* FGM takes the input gradient without computing the output it ignores, PGD scores its last
  iterate without a gradient;
* the sampler's uniforms come from ``random_()``'s integers, the weight update from one fused
  pass where the learning rate is a power of two;
* so a small run stores what the code before these changes stored (values recorded by running
  that code, pinned below);
* the thread count follows its rules and its override.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures import assert_same_store

from purify import matmul, train
from purify import store as S
from purify.attacks import PGD
from purify.cli import main
from purify.config import ConfigError
from purify.data import Batch, SparseCodingProblem, labels, make_dictionary, make_teacher, sample_hidden
from purify.learners import IdealRobustModel, LazyReLUNet, LinearModel, NTKModel, RandomNet, symmetric
from purify.learners.base import input_grad
from purify.learners.symmetric import SymmetricReLUNet, _gauss_
from purify.threads import ENV, choose_threads, configure_threads

F64 = torch.float64
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------------- the sampler


def _dense_hidden(n, D, levels, generator, dtype):
    """sample_hidden as it was: a bucketize and a gather over all n × D coordinates."""
    bounds, values, lower = [], [], 0.0
    for magnitude, prob in levels:
        bounds += [lower + prob / 2, lower + prob]
        values += [-magnitude, magnitude]
        lower += prob
    values.append(0.0)
    u = torch.rand(n, D, generator=generator, dtype=torch.float64)
    idx = torch.bucketize(u, torch.tensor(bounds, dtype=torch.float64), right=True)
    return torch.tensor(values, dtype=dtype)[idx]


def _dense_sample(p: SparseCodingProblem, n: int, generator: torch.Generator) -> Batch:
    """SparseCodingProblem.sample as it was: x = (z + ξ'') Mᵀ as a dense product."""
    D, dtype = p.n_features, p.M.dtype
    z = _dense_hidden(n, D, p.levels, generator, dtype)
    h = z
    if p.spike_prob > 0 and p.spike_level > 0:
        h = z + _dense_hidden(n, D, ((p.spike_level, p.spike_prob),), generator, dtype)
    x = h @ p.M.T
    if p.sigma_x > 0:
        x = x + torch.randn(n, p.d, generator=generator, dtype=dtype) * (p.sigma_x / math.sqrt(p.d))
    return Batch(x, labels(z, p.w_star), z)


def _problem(kind, d, D, k, *, dtype, noise: bool, seed: int) -> SparseCodingProblem:
    M = make_dictionary(kind, d, D, generator=gen(seed), dtype=dtype)
    w = make_teacher(D, generator=gen(seed + 1), dtype=dtype)
    levels = ((1.0, 2.0 / D), (1.0 / math.sqrt(k), k / D))
    if not noise:
        return SparseCodingProblem(M, w, levels, 0.0, 0.0, 0.0)
    level = 1.0 / k**0.501
    return SparseCodingProblem(M, w, levels, 0.1, level, 0.1**2 / (D * level**2) * 20)


@pytest.mark.parametrize("kind,d,D,k,n", [
    ("orthogonal", 100, 100, 8, 512),
    ("overcomplete", 60, 120, 6, 300),
    ("identity", 50, 50, 5, 64),
    ("orthogonal", 300, 300, 20, 1),
])
@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize("noise", [True, False], ids=["noise", "noiseless"])
def test_sparse_sampler_equals_the_dense_one(kind, d, D, k, n, dtype, noise):
    p = _problem(kind, d, D, k, dtype=dtype, noise=noise, seed=d + n)
    for seed in (0, 1, 2):
        new, old = p.sample(n, generator=gen(seed)), _dense_sample(p, n, gen(seed))
        # the same draws: codes and labels exactly, x to the round-off of another summation order
        assert torch.equal(new.z, old.z) and torch.equal(new.y, old.y)
        tol = 1e-5 if dtype == torch.float32 else 1e-12
        torch.testing.assert_close(new.x, old.x, rtol=0, atol=tol)
        assert new.x.dtype == dtype and new.x.shape == (n, d)


def test_sparse_sampler_consumes_the_stream_as_the_dense_one():
    # a fixed training set (one large draw) and the online batches after it see the same stream
    p = _problem("overcomplete", 40, 80, 4, dtype=torch.float32, noise=True, seed=5)
    g_new, g_old = gen(9), gen(9)
    for n in (1000, 128, 128):
        new, old = p.sample(n, generator=g_new), _dense_sample(p, n, g_old)
        assert torch.equal(new.z, old.z)
        torch.testing.assert_close(new.x, old.x, rtol=0, atol=1e-5)
    assert torch.equal(g_new.get_state(), g_old.get_state())


def test_sample_hidden_is_unchanged_bit_for_bit():
    levels = ((1.0, 0.05), (0.25, 0.2), (0.6, 0.1))
    for dtype in (torch.float32, F64):
        assert torch.equal(sample_hidden(300, 40, levels=levels, generator=gen(3), dtype=dtype),
                           _dense_hidden(300, 40, levels, gen(3), dtype))


def test_a_spike_on_an_active_code_coordinate_adds():
    # z and ξ'' share a coordinate: x must hold M (z + ξ'') there, not one of them
    M = torch.eye(3, dtype=F64)
    p = SparseCodingProblem(M, torch.ones(3, dtype=F64), ((1.0, 1.0),), 0.0, 0.25, 1.0)
    b = p.sample(50, generator=gen(0))
    assert bool((b.z.abs() == 1).all())
    assert set(np.unique(np.round((b.x - b.z).numpy(), 12)).tolist()) == {-0.25, 0.25}


# ---------------------------------------------------------------------------- the activation


def _old_one_sided(u, b, s):
    """The one-sided pass as it was (exp on the full range)."""
    s = s.clamp_min(1e-30)
    a = u.abs().sub_(b).mul_(1.0 / s)
    cdf = torch.special.ndtr(a)
    val = a * cdf
    val.add_(a.square_().mul_(-0.5).exp_(), alpha=_INV_SQRT_2PI)
    return torch.copysign(val, u) @ s, cdf


def _old_two_sided(u, b, s):
    s = s.clamp_min(1e-30)
    inv = 1.0 / s
    a_pos = (u - b).mul_(inv)
    a_neg = (u + b).mul_(inv).neg_()
    cdf_pos, cdf_neg = torch.special.ndtr(a_pos), torch.special.ndtr(a_neg)
    val = a_pos * cdf_pos
    val.sub_(cdf_neg.mul(a_neg))
    val.add_(a_pos.square_().mul_(-0.5).exp_().sub_(a_neg.square_().mul_(-0.5).exp_()), alpha=_INV_SQRT_2PI)
    return val @ s, cdf_pos.add_(cdf_neg)


def _net(dtype, ratio, seed=0):
    """A net whose pre-activations reach far past the range where exp(−a²/2) underflows."""
    g = gen(seed)
    W = torch.randn(300, 20, generator=g, dtype=dtype) * 0.3
    b = 0.5 + torch.rand(300, generator=g, dtype=dtype)
    x = torch.randn(200, 20, generator=g, dtype=dtype) * torch.logspace(-3, 0.5, 200, dtype=dtype)[:, None]
    return SymmetricReLUNet(W, b, ratio * b), x


@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize("ratio", [0.05, 0.3], ids=["one-sided", "two-sided"])
def test_fused_activation_equals_the_previous_formula(dtype, ratio):
    net, x = _net(dtype, ratio)
    u = x @ net.W.T
    a = (u.abs() - net.b) / net.sigma_rho
    # entries on both sides of the threshold, far enough out for exp(−a²/2) to underflow
    assert float(a.min()) < -3 and float(a.max()) > 15 and float((a.abs() > 13.2).float().mean()) > 0.01
    old = (_old_one_sided if ratio <= 0.1 else _old_two_sided)(u.clone(), net.b, net.sigma_rho)
    out, grad = net.forward_and_input_grad(x)
    tol = {"rtol": 1e-6, "atol": 1e-6} if dtype == torch.float32 else {"rtol": 1e-13, "atol": 1e-13}
    torch.testing.assert_close(out, old[0], **tol)
    torch.testing.assert_close(grad, old[1] @ net.W, **tol)
    # the derivative itself, entry by entry, through the step's gradient
    y = torch.where(torch.arange(200) % 2 == 0, 1.0, -1.0).to(dtype)
    res = net.loss_and_grad(x, y)
    dloss = -y * torch.sigmoid(-y * old[0]) / x.shape[0]
    torch.testing.assert_close(res.grad, (old[1] * dloss[:, None]).T @ x, **tol)


@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize("ratio", [0.05, 0.3], ids=["one-sided", "two-sided"])
def test_the_input_gradient_alone_is_forward_and_input_grads_bit_for_bit(dtype, ratio):
    """FGM's shortcut skips the output's passes; the gradient must not move by a bit."""
    net, x = _net(dtype, ratio)
    _, want = net.forward_and_input_grad(x)
    kept = x.clone()
    assert torch.equal(net.input_grad(x), want) and torch.equal(input_grad(net, x), want)
    assert net._one_sided == (ratio <= 0.1) and torch.equal(x, kept)
    # the autograd reference path (the tests' gradient checks use it) takes no shortcut
    W = net.W.clone().requires_grad_()
    _, ref = SymmetricReLUNet(W, net.b, net.sigma_rho).forward_and_input_grad(x)
    torch.testing.assert_close(SymmetricReLUNet(W, net.b, net.sigma_rho).input_grad(x), ref, rtol=0, atol=0)


def test_a_learner_without_the_shortcut_gives_the_gradient_of_forward_and_input_grad():
    model = LinearModel(torch.randn(20, generator=gen(4)), torch.tensor(0.1))
    x = torch.randn(7, 20, generator=gen(5))
    assert not hasattr(model, "input_grad")
    assert torch.equal(input_grad(model, x), model.forward_and_input_grad(x)[1])


def _pgd_before(self, model, x, y, tau, *, generator):
    """``PGD.run`` as it was: the gradient taken at the last iterate too."""
    best = torch.zeros_like(x)
    best_margin = torch.full_like(y, float("inf"))
    for _ in range(self.restarts):
        delta = torch.zeros_like(x)
        if self.random_start:
            delta = self.norm.random_start(tuple(x.shape), tau, generator=generator, device=x.device, dtype=x.dtype)
        for step in range(self.steps + 1):
            out, grad = model.forward_and_input_grad(x + delta)
            margin = y * out
            better = margin < best_margin
            best = torch.where(better[:, None], delta, best)
            best_margin = torch.where(better, margin, best_margin)
            if step == self.steps:
                break
            delta = self._step(delta, y[:, None] * grad, tau)
    return best


def _every_learner():
    """One learner of each kind, on ``d = 20`` inputs, with inputs of its dtype."""
    one_sided, x = _net(torch.float32, 0.05)
    xd = x.to(F64)
    ntk = NTKModel.init(20, 64, generator=gen(8), bias=0.5, sigma_rho=0.2, dtype=F64)
    ntk.V = torch.randn(64, 20, generator=gen(9), dtype=F64)
    M = make_dictionary("orthogonal", 20, 20, generator=gen(10), dtype=F64)
    return {
        "symmetric-one-sided": (one_sided, x),
        "symmetric-two-sided": (_net(torch.float32, 0.3)[0], x),
        "lazy": (LazyReLUNet.init(20, 64, generator=gen(7), dtype=F64), xd),
        "ntk": (ntk, xd),
        "random-net": (RandomNet.init(20, 64, 2, generator=gen(11), dtype=F64), xd),
        "ideal": (IdealRobustModel(M, make_teacher(20, generator=gen(12), dtype=F64), 4), xd),
        "linear": (LinearModel(torch.randn(20, generator=gen(13), dtype=F64), 0.1), xd),
    }


@pytest.mark.parametrize("norm,tau", [("l2", 0.5), ("linf", 0.05)])
@pytest.mark.parametrize("name", list(_every_learner()))
def test_pgd_scoring_its_last_iterate_without_a_gradient_keeps_every_perturbation(name, norm, tau):
    model, x = _every_learner()[name]
    y = torch.where(torch.arange(x.shape[0]) % 2 == 0, 1.0, -1.0).to(x.dtype)
    attack = PGD(norm, steps=4, restarts=2)
    got = attack(model, x, y, tau, generator=gen(14))
    want = attack.norm.project(_pgd_before(attack, model, x, y, tau, generator=gen(14)), tau)
    assert torch.equal(got, want)
    assert bool((got != 0).any())


def test_the_attacks_shortcuts_change_no_stored_number(monkeypatch, tmp_path: Path):
    """The optimisations' switches: small FGM-trained runs (one-sided and two-sided passes, PGD
    in every evaluation) with FGM's gradient from ``forward_and_input_grad`` and PGD's last
    gradient computed, and with both shortcuts."""
    for extra in (["--clean-steps", "20"], ["--clean-steps", "20", "--bias-schedule", "paper"]):
        runs = []
        for name, grad_only, pgd_run in (("full", None, _pgd_before),
                                          ("shortcut", SymmetricReLUNet.input_grad, PGD.run)):
            monkeypatch.setattr(SymmetricReLUNet, "input_grad", grad_only)
            monkeypatch.setattr(PGD, "run", pgd_run)
            run = tmp_path / f"{name}{len(extra)}"
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()) as err:
                assert main(["simulate", *TINY, *extra, "--out", str(run)]) == 0, err.getvalue()
            runs.append(run)
        assert json.loads(S.load_run(runs[0]).attrs["config_json"])["train"]["adv_attack"] == "fgm"
        assert_same_store(*runs)


def _ndtr_inputs(dtype) -> torch.Tensor:
    """float32: every 9973rd bit pattern (denormals, infinities and NaNs among them); float64:
    a fine grid over [−40, 40], random points and the special values."""
    if dtype == torch.float32:
        return torch.arange(-(2**31), 2**31, 9973, dtype=torch.int64).to(torch.int32).view(torch.float32)
    return torch.cat([torch.linspace(-40, 40, 400001, dtype=F64), torch.randn(100000, generator=gen(3), dtype=F64) * 10,
                      torch.tensor([0.0, -0.0, 1e-310, -1e-310, math.inf, -math.inf, math.nan], dtype=F64)])


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_in_place_ndtr_is_torch_ndtr_bit_for_bit(dtype):
    """The optimisation's primitive: the activation's Φ is ``torch.special.ndtr``'s, bit for bit,
    and the build check that turns the in-place steps on agrees with a sweep far wider than its own."""
    a = _ndtr_inputs(dtype)
    kept = a.clone()
    want = torch.special.ndtr(a)
    same_nan = lambda got: bool((got.isnan() == want.isnan()).all())  # noqa: E731
    got = symmetric._ndtr(a)
    assert torch.equal(a.nan_to_num(7.0), kept.nan_to_num(7.0)), "the input is left alone"
    assert same_nan(got) and torch.equal(got.nan_to_num(7.0), want.nan_to_num(7.0))
    steps = symmetric._ndtr_steps(a)
    assert symmetric._ndtr_in_place_exact(dtype) == (same_nan(steps) and torch.equal(steps.nan_to_num(7.0),
                                                                                     want.nan_to_num(7.0)))


def test_the_in_place_ndtr_changes_no_stored_number(monkeypatch, tmp_path: Path):
    """The optimisation's switch: one small run (both bias schedules' passes: the default's
    one-sided, the paper's two-sided) with ``torch.special.ndtr`` and with the in-place steps."""
    for extra in ([], ["--bias-schedule", "paper", "--adv-steps", "5"]):
        runs = []
        for name, fn in (("torch", torch.special.ndtr), ("in_place", symmetric._ndtr)):
            monkeypatch.setattr(symmetric, "_ndtr", fn)
            run = tmp_path / f"{name}{len(extra)}"
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()) as err:
                assert main(["simulate", *TINY, *extra, "--out", str(run)]) == 0, err.getvalue()
            runs.append(run)
        assert_same_store(*runs)


def test_exp_keeps_exact_zeros_and_flushes_only_below_the_smallest_normal():
    for dtype in (torch.float32, F64):
        tiny = torch.finfo(dtype).tiny
        a = torch.linspace(-60, 60, 20001, dtype=dtype)
        exact = torch.exp(-0.5 * a * a)
        got = _gauss_(a.clone())
        keep = exact > 2 * math.e * tiny
        assert torch.equal(got[keep], exact[keep])
        assert bool((got[~keep] == 0).all()) and bool((exact[~keep] < 2 * math.e * tiny).all())


def test_an_example_every_neuron_ignores_has_output_exactly_zero():
    # its label under sign(0) = +1 must not depend on denormal round-off
    W = torch.randn(50, 10, generator=gen(1))
    b = torch.full((50,), 10.0)
    net = SymmetricReLUNet(W, b, 0.05 * b)
    x = torch.randn(4, 10, generator=gen(2)) * 1e-3
    assert torch.equal(net(x), torch.zeros(4)) and torch.equal(net(-x), torch.zeros(4))


def test_nan_weights_still_give_a_nan_output():
    # divergence detection relies on it
    W = torch.randn(8, 5, generator=gen(1))
    W[3, 2] = float("nan")
    for ratio in (0.05, 0.5):
        b = torch.ones(8)
        out = SymmetricReLUNet(W, b, ratio * b)(torch.randn(3, 5, generator=gen(2)))
        assert bool(out.isnan().all())


# ---------------------------------------------------------------------------- the weight update


@pytest.mark.parametrize("lr", [1.0, 0.5, 0.25, 2.0, 0.3, 0.7, 1.5, 1e-3])
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_the_weight_update_is_the_two_pass_expression_bit_for_bit(lr, dtype):
    # entries over many magnitudes, so the FMA of a non-power-of-two lr would show (it differs
    # on about 1 % of entries at lr = 0.3): that lr must take the two passes
    g = gen(5)
    W = torch.randn(300, 200, generator=g, dtype=dtype) * torch.logspace(-6, 1, 200, dtype=dtype)
    grad = torch.randn(300, 200, generator=g, dtype=dtype) * torch.logspace(2, -8, 300, dtype=dtype)[:, None]
    assert torch.equal(train.gradient_step(W, grad, lr), W - lr * grad)


def test_the_fused_weight_update_changes_no_stored_number(monkeypatch, tmp_path: Path):
    """The optimisation's switch: one small run with the two-pass update and with the fused one."""
    runs = []
    for name, fn in (("two_pass", lambda W, grad, lr: W - lr * grad), ("fused", train.gradient_step)):
        monkeypatch.setattr(train, "gradient_step", fn)
        run = tmp_path / name
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()) as err:
            assert main(["simulate", *TINY, "--adv-lr", "0.25", "--out", str(run)]) == 0, err.getvalue()
        runs.append(run)
    assert_same_store(*runs)


# ---------------------------------------------------------------------------- a small run


TINY = ["--d", "32", "--k", "3", "--m", "64", "--clean-steps", "60", "--adv-steps", "20",
        "--n-test", "200", "--n-eval", "100", "--batch-size", "128", "--pgd-steps", "3",
        "--clean-snapshots", "4", "--adv-snapshots", "2", "--log-points", "10", "--quiet",
        "--no-analysis", "--seed", "0", "--preset", "boundary"]

# Recorded (with the boundary preset, then the default) with the code before the sparse sampler and the fused passes (one thread):
# per snapshot Σ W and ‖W‖_F, the sum of the loss curve, clean accuracy per snapshot.  On AMD
# cores; an Intel CPU sums the labels' <w*, z> in another order (MKL's AVX-512 code), so the
# round-off that decides the sign of an exact tie (about 2 % of ties at d = 32) differs and the
# runs see other labels: INTEL_AT_STOP_31 holds the same quantities recorded there, with the
# code of stop 31 (after those optimisations).
BEFORE = {
    "default": ([], [-1.53706075, -1.44427075, -1.33060289, 3.65138825, 4.02420532, 3.8468221],
                [1.42766542, 1.42475857, 1.46681941, 6.178456, 5.47931303, 5.16351437],
                13.72105685, [0.46, 0.46, 0.57, 0.9, 0.875, 0.85]),
    "overcomplete": (["--dictionary", "overcomplete"],
                     [-1.53706075, -1.64888414, -1.87213975, -4.93430849, -1.44128318, -1.76535288],
                     [1.42766542, 1.42963108, 1.50481873, 4.2968269, 3.18361419, 2.8497387],
                     14.525859, [0.48, 0.48, 0.595, 0.81, 0.8, 0.805]),
    "n_train": (["--n-train", "256"],
                [-1.53706075, -1.35624312, -0.69276812, 6.54564443, 7.21182648, 7.22644739],
                [1.42766542, 1.43007217, 1.60025974, 5.83364624, 5.78980831, 5.92238721],
                11.18835653, [0.46, 0.48, 0.53, 0.815, 0.755, 0.765]),
    "paper-two-sided": (["--bias-schedule", "paper", "--adv-steps", "5"],
                        [-1.53706075, 4.07003625, 8.41657909, 5.21766203, 5.16188023, 5.09460369],
                        [1.42766542, 1.4734156, 2.04894795, 1.96965446, 1.95028789, 1.92186867],
                        10.36958629, [0.505, 0.745, 0.85, 0.89, 0.89, 0.89]),
}
INTEL_AT_STOP_31 = {
    "default": ([], [-1.53706075, -1.44427075, -1.16051068, 4.23060039, 4.50116677, 4.25888978],
                [1.42766542, 1.42475857, 1.46897545, 6.17781895, 5.47784511, 5.16417306],
                13.71836779, [0.47, 0.465, 0.555, 0.9, 0.88, 0.86]),
    "overcomplete": (["--dictionary", "overcomplete"],
                     [-1.53706075, -1.64888415, -1.87213966, -5.13932949, -1.54181951, -1.84972993],
                     [1.42766542, 1.42963108, 1.50481873, 4.30112667, 3.19080969, 2.85718981],
                     14.52742133, [0.475, 0.475, 0.595, 0.82, 0.815, 0.815]),
    "n_train": (["--n-train", "256"],
                [-1.53706075, -1.35624314, -0.692768086, 6.54564417, 7.21182923, 7.22645023],
                [1.42766542, 1.43007217, 1.60025974, 5.83364625, 5.78980831, 5.9223872],
                11.18835668, [0.47, 0.49, 0.535, 0.815, 0.755, 0.765]),
    "paper-two-sided": (["--bias-schedule", "paper", "--adv-steps", "5"],
                        [-1.53706075, 4.07003615, 8.60385822, 5.36036397, 5.30277697, 5.23546865],
                        [1.42766542, 1.47341561, 2.05101526, 1.97170455, 1.95226172, 1.92382262],
                        10.36957902, [0.505, 0.745, 0.85, 0.895, 0.895, 0.89]),
}


@pytest.mark.parametrize("name", list(BEFORE))
def test_a_small_run_stores_what_the_code_before_stored(name, tmp_path: Path):
    extra, w_sum, w_norm, loss_sum, clean = (INTEL_AT_STOP_31 if matmul.cpu_vendor() == "GenuineIntel" else BEFORE)[name]
    run = tmp_path / "run"
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()) as err:
        assert main(["simulate", *TINY, *extra, "--out", str(run)]) == 0, err.getvalue()
    W = S.load_run(run, "snapshots").W.values.astype(np.float64)
    root = S.load_run(run)
    np.testing.assert_allclose(W.sum(axis=(1, 2)), w_sum, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(W, axis=(1, 2)), w_norm, rtol=1e-6)
    np.testing.assert_allclose(root.loss.values.astype(np.float64).sum(), loss_sum, rtol=1e-6)
    # Up to two of 200 held-out examples may change sides: those whose output the old code
    # left at a denormal (|f| < 1e-42, every neuron ≥ 13 σ_ρ from its threshold) of either sign
    # now have f = 0 exactly, hence the label +1.
    np.testing.assert_allclose(root.clean_accuracy.values, clean, rtol=0, atol=2 / 200 + 1e-6)


# ---------------------------------------------------------------------------- threads


def test_thread_rules():
    assert choose_threads(default=2, cores=2, load=0.2).threads == 2
    assert choose_threads(default=2, cores=2, load=0.7).threads == 1  # 1.3 idle cores
    assert choose_threads(default=8, cores=4, load=1.4).threads == 3  # affinity, then idle
    assert choose_threads(default=1, cores=4, load=0.0).threads == 1  # a caller's pin stays
    assert choose_threads(default=2, cores=2, load=9.0).threads == 1  # never below one
    assert choose_threads(default=2, cores=2, load=None).threads == 2
    assert choose_threads(stored=2, default=1, cores=2, load=5.0).threads == 2  # resume
    assert choose_threads(override="3", stored=2, default=1, cores=2, load=5.0).threads == 3


def test_the_test_suite_runs_one_worker_per_core_of_the_affinity_mask(monkeypatch):
    # xdist's own ``-n auto`` counts the machine's physical cores (psutil), which a container or
    # taskset can restrict to far fewer: three allowed cores must give three workers, not the host's
    import conftest

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 5, 9}, raising=False)
    assert conftest.pytest_xdist_auto_num_workers(None) == 3


@pytest.mark.parametrize("bad", ["0", "-1", "two", "1.5"])
def test_thread_override_must_be_a_positive_integer(bad):
    with pytest.raises(ConfigError, match=ENV):
        choose_threads(override=bad)


def test_thread_override_is_applied_and_a_bad_one_is_a_usage_error(monkeypatch, capsys):
    before = torch.get_num_threads()
    try:
        monkeypatch.setenv(ENV, "2")
        assert configure_threads().threads == 2 and torch.get_num_threads() == 2
        monkeypatch.setenv(ENV, "x")
        assert main(["simulate", "--out", "/nonexistent/never"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and ENV in err
    finally:
        monkeypatch.delenv(ENV)
        configure_threads(stored=before)
    assert torch.get_num_threads() == before


def test_the_store_records_the_threads_and_a_resume_reuses_them(monkeypatch, tmp_path):
    before = torch.get_num_threads()
    run = tmp_path / "run"
    quiet = contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO())
    try:
        monkeypatch.setenv(ENV, "2")
        with quiet[0], quiet[1]:
            # as small as a run gets: two threads on a loaded machine are slow
            assert main(["simulate", *TINY, "--clean-steps", "4", "--adv-steps", "1", "--clean-snapshots", "2",
                         "--adv-snapshots", "1", "--attacks", "fgm", "--norms", "l2", "--n-test", "40",
                         "--n-eval", "20", "--out", str(run)]) == 0
        assert S.read_attrs(run)["torch_threads"] == 2
        monkeypatch.delenv(ENV)
        configure_threads(stored=1)
        with quiet[0], quiet[1]:
            assert main(["simulate", "--out", str(run), "--resume", "--quiet", "--no-analysis"]) == 0
        assert torch.get_num_threads() == 2  # the stored count, not the 1 set before
    finally:
        monkeypatch.delenv(ENV, raising=False)
        configure_threads(stored=before)
