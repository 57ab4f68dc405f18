"""Tests of the comparison learners (lazy, linearized, NTK, linear, random nets) and purify.fit.

Hand-written gradients are checked against torch.autograd of independently written reference
forwards in float64; the lazy and random networks' statistics at initialization against their
closed forms (Wang et al. §2, Bubeck et al. §1.2); the NTK features against the symmetric
network's weight gradient (Allen-Zhu & Li Def. 5.5); the ball constraints of Wang et al.
against their definitions; adversarial training against the closed form of FGM on a linear
model; and a trained lazy net against PGD end to end.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from fixtures import gen

from purify.attacks import make_attack
from purify.config import ConfigError
from purify.data import SparseCodingProblem, make_dictionary, make_teacher
from purify.evaluate import accuracy, robust_correct
from purify.fit import FitConfig, fit
from purify.learners import (
    LazyReLUNet,
    Learner,
    LinearizedLazyNet,
    LinearModel,
    NTKModel,
    RandomNet,
    SymmetricReLUNet,
)
from purify.learners import logistic as logistic_module
from purify.train import DivergenceError

F64 = torch.float64
Z = 5.0  # standard errors allowed in Monte-Carlo checks


def sphere(n: int, d: int, seed: int, radius: float = 1.0) -> torch.Tensor:
    x = torch.randn(n, d, generator=gen(seed), dtype=F64)
    return x / x.norm(dim=1, keepdim=True) * radius


def labels(n: int, seed: int) -> torch.Tensor:
    return torch.where(torch.rand(n, generator=gen(seed), dtype=F64) < 0.5, 1.0, -1.0).to(F64)


def perturbed_lazy(cls=LazyReLUNet, d=7, m=40, seed=0, paired=False):
    net = LazyReLUNet.init(d, m, generator=gen(seed), dtype=F64, paired=paired)
    # Move W off W₀ so that the current weights and the init differ in every term.
    W = net.W0 + 0.3 * torch.randn(m, d, generator=gen(seed + 100), dtype=F64)
    return cls(net.W0, net.a, W)


def random_ntk(sigma: float, bias: float, seed=0, d=6, m=9):
    model = NTKModel.init(d, m, generator=gen(seed), bias=bias, sigma_rho=sigma, dtype=F64)
    model.V = torch.randn(m, d, generator=gen(seed + 1), dtype=F64)
    return model


# ---------------------------------------------------------------------------------------------
# reference forwards written from the papers' formulas, differentiated by autograd


def ref_lazy(net, x, W):
    return F.relu(x @ W.T) @ net.a / math.sqrt(net.width)


def ref_linearized(net, x, W):
    gate = (x @ net.W0.T > 0).to(x.dtype)
    return (gate * (x @ W.T)) @ net.a / math.sqrt(net.width)


def ref_ntk(model, x, V):
    u = x @ model.W.T
    s = model.sigma_rho
    if bool((s > 0).all()):
        c = torch.special.ndtr((u - model.b) / s) + torch.special.ndtr((-u - model.b) / s)
    else:
        c = (u >= model.b).to(x.dtype) + (-u >= model.b).to(x.dtype)
    return model.scale * (c * (x @ V.T)).sum(dim=1)


def ref_linear(model, x, v, c):
    return x @ v + c


_TORCH_PSI = {"relu": F.relu, "tanh": torch.tanh, "softplus": F.softplus, "gelu": F.gelu}


def ref_random(net, x, *Ws):
    h = x
    for W in Ws:
        h = _TORCH_PSI[net.activation](h @ W.T)
    return h @ net.a / math.sqrt(net.width)


CASES = {
    "lazy": (lambda: perturbed_lazy(), ref_lazy),
    "lazy-paired": (lambda: perturbed_lazy(paired=True, seed=3), ref_lazy),
    "linearized": (lambda: perturbed_lazy(LinearizedLazyNet, seed=5), ref_linearized),
    "ntk-smooth": (lambda: random_ntk(sigma=0.4, bias=0.2), ref_ntk),
    "ntk-hard": (lambda: random_ntk(sigma=0.0, bias=0.3, seed=7), ref_ntk),
    "linear": (lambda: LinearModel(torch.randn(7, generator=gen(8), dtype=F64), 0.3), ref_linear),
    "random-relu-1": (lambda: RandomNet.init(6, 11, generator=gen(9), dtype=F64), ref_random),
    "random-relu-3": (lambda: RandomNet.init(6, 11, 3, generator=gen(10), dtype=F64), ref_random),
    "random-tanh-2": (
        lambda: RandomNet.init(6, 11, 2, activation="tanh", generator=gen(11), dtype=F64), ref_random),
    "random-softplus-1": (
        lambda: RandomNet.init(6, 11, activation="softplus", generator=gen(12), dtype=F64), ref_random),
    "random-gelu-2": (
        lambda: RandomNet.init(6, 11, 2, activation="gelu", generator=gen(13), dtype=F64), ref_random),
}


def _input(model, n=13, seed=21):
    d = model.Ws[0].shape[1] if isinstance(model, RandomNet) else (
        model.v.shape[0] if isinstance(model, LinearModel) else model.W.shape[1])
    return torch.randn(n, d, generator=gen(seed), dtype=F64), labels(n, seed + 1)


@pytest.mark.parametrize("case", list(CASES))
def test_forward_and_input_grad_match_autograd(case):
    build, ref = CASES[case]
    model = build()
    assert isinstance(model, Learner)
    x, _ = _input(model)
    xr = x.clone().requires_grad_(True)
    out_ref = ref(model, xr, *model.params())
    (grad_ref,) = torch.autograd.grad(out_ref.sum(), xr)
    out, grad = model.forward_and_input_grad(x)
    torch.testing.assert_close(out, out_ref.detach(), atol=1e-13, rtol=1e-11)
    torch.testing.assert_close(model(x), out, atol=0, rtol=0)
    torch.testing.assert_close(grad, grad_ref, atol=1e-13, rtol=1e-11)


@pytest.mark.parametrize("case", list(CASES))
def test_loss_and_grad_match_autograd(case):
    build, ref = CASES[case]
    model = build()
    x, y = _input(model, seed=31)
    leaves = [p.clone().requires_grad_(True) for p in model.params()]
    loss_ref = F.softplus(-y * ref(model, x, *leaves)).mean()
    grads_ref = torch.autograd.grad(loss_ref, leaves)
    loss, grads = model.loss_and_grad(x, y)
    assert float(loss) == pytest.approx(float(loss_ref.detach()), rel=1e-12)
    assert len(grads) == len(leaves)
    for g, g_ref, p in zip(grads, grads_ref, model.params(), strict=True):
        assert g.shape == p.shape
        torch.testing.assert_close(g, g_ref, atol=1e-14, rtol=1e-10)


def test_loss_and_grad_matches_finite_differences_for_the_lazy_net():
    # autograd-free: <∇L, U> = (L(W + εU) − L(W − εU)) / 2ε + O(ε²) away from ReLU kinks
    net = perturbed_lazy(seed=41)
    x, y = _input(net, seed=42)
    _, (grad,) = net.loss_and_grad(x, y)
    eps = 1e-6
    for seed in range(3):
        U = torch.randn(net.W.shape, generator=gen(43 + seed), dtype=F64)
        lp = LazyReLUNet(net.W0, net.a, net.W + eps * U).loss_and_grad(x, y)[0]
        lm = LazyReLUNet(net.W0, net.a, net.W - eps * U).loss_and_grad(x, y)[0]
        assert float(lp - lm) / (2 * eps) == pytest.approx(float((grad * U).sum()), rel=1e-6)


def test_linearized_net_is_the_first_order_expansion_at_init():
    # f_lin(W, x) = f(W₀, x) + <∇_W f(W₀, x), W − W₀>, with ∇_W f(W₀, x) from autograd
    net = perturbed_lazy(seed=51)
    lin = net.linearized()
    assert isinstance(lin, LinearizedLazyNet) and lin.W is not net.W
    torch.testing.assert_close(lin.W, net.W, atol=0, rtol=0)
    x, _ = _input(net, n=6, seed=52)
    for j in range(x.shape[0]):
        W0 = net.W0.clone().requires_grad_(True)
        f0 = ref_lazy(net, x[j : j + 1], W0)
        (g,) = torch.autograd.grad(f0.sum(), W0)
        expected = float(f0.detach()) + float((g * (net.W - net.W0)).sum())
        assert float(lin(x[j : j + 1])) == pytest.approx(expected, rel=1e-12, abs=1e-13)
    # at W = W₀ the two models agree exactly in value
    at_init = LinearizedLazyNet(net.W0, net.a, net.W0.clone())
    torch.testing.assert_close(at_init(x), LazyReLUNet(net.W0, net.a)(x), atol=1e-14, rtol=0)


def test_paired_initialization_outputs_zero():
    # Gao et al. eq. (4): w̄_r = w_r, a'_r = −a_r ⇒ f(W₀, x) = 0
    net = LazyReLUNet.init(9, 20, generator=gen(61), paired=True, dtype=F64)
    torch.testing.assert_close(net.W0[:10], net.W0[10:], atol=0, rtol=0)
    torch.testing.assert_close(net.a[:10], -net.a[10:], atol=0, rtol=0)
    x = torch.randn(30, 9, generator=gen(62), dtype=F64)
    assert float(net(x).abs().max()) < 1e-12
    with pytest.raises(ValueError, match="even width"):
        LazyReLUNet.init(9, 21, generator=gen(0), paired=True)


@pytest.mark.parametrize("case", ["lazy", "linearized", "ntk-smooth", "random-relu-3"])
def test_chunked_computation_equals_unchunked(case, monkeypatch):
    build, _ = CASES[case]
    model = build()
    x, y = _input(model, n=23, seed=71)
    whole = model.forward_and_input_grad(x), model.loss_grad_and_output(x, y)
    # a budget below one row forces one example per chunk
    monkeypatch.setattr(logistic_module, "CHUNK_ELEMENTS", 5)
    parts = model.forward_and_input_grad(x), model.loss_grad_and_output(x, y)
    for a, b in zip(whole[0], parts[0], strict=True):
        torch.testing.assert_close(a, b, atol=1e-13, rtol=1e-12)
    torch.testing.assert_close(whole[1][0], parts[1][0], atol=1e-14, rtol=1e-12)
    for a, b in zip(whole[1][1], parts[1][1], strict=True):
        torch.testing.assert_close(a, b, atol=1e-14, rtol=1e-12)
    torch.testing.assert_close(whole[1][2], parts[1][2], atol=1e-13, rtol=1e-12)
    # gradients written into caller buffers (as fit does) overwrite whatever the buffers held
    buffers = tuple(torch.full_like(p, float("nan")) for p in model.params())
    loss, grads, _ = model.loss_grad_and_output(x, y, out=buffers)
    for g, buf, ref in zip(grads, buffers, whole[1][1], strict=True):
        assert g.data_ptr() == buf.data_ptr()
        torch.testing.assert_close(g, ref, atol=1e-14, rtol=1e-12)


# ---------------------------------------------------------------------------------------------
# statistics at initialization


def test_lazy_net_at_init_has_the_closed_form_moments():
    # ‖x‖ = 1: f(x) = (1/√m) Σ a_s ReLU(<w_s,x>) has E f² = E ReLU(g)² = 1/2 (the a_s decorrelate
    # the terms), and ∇_x f = (1/√m) Σ a_s 1[<w_s,x> > 0] w_s has E‖∇f‖² = E[1[g > 0]‖w‖²] = d/2.
    d, m, n = 8, 16, 3000
    f2, g2 = [], []
    xs = sphere(n, d, seed=81)
    for i in range(n):
        net = LazyReLUNet.init(d, m, generator=gen(10_000 + i), dtype=F64)
        out, grad = net.forward_and_input_grad(xs[i : i + 1])
        f2.append(float(out[0]) ** 2)
        g2.append(float(grad.square().sum()))
    for values, expected in ((f2, 0.5), (g2, d / 2)):
        v = np.asarray(values)
        assert abs(v.mean() - expected) < Z * v.std() / math.sqrt(n), (v.mean(), expected)


def _gauss_moment(fn, points=200):
    """E fn(X), X ~ N(0, 1), by Gauss–Hermite quadrature (exact enough for smooth fn)."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(points)
    return float((weights * fn(nodes)).sum() / math.sqrt(2 * math.pi))


def _psi_np(name):
    from scipy.special import ndtr

    return {
        "tanh": (np.tanh, lambda u: 1 - np.tanh(u) ** 2),
        "softplus": (lambda u: np.logaddexp(0, u), lambda u: 1 / (1 + np.exp(-u))),
        "gelu": (lambda u: u * ndtr(u), lambda u: ndtr(u) + u * np.exp(-u * u / 2) / math.sqrt(2 * math.pi)),
    }[name]


@pytest.mark.parametrize(
    ("activation", "depth"), [("relu", 1), ("relu", 3), ("tanh", 1), ("softplus", 1), ("gelu", 1)]
)
def test_random_net_at_init_has_the_closed_form_moments(activation, depth):
    # Bubeck et al. §1.2, ‖x‖ = √d so w·x ~ N(0,1): E f(x)² = E ψ(X)², and with
    # ‖w‖² = X²/d + χ²_{d−1}/d, E‖∇f‖² = E[ψ'(X)² X²]/d + E[ψ'(X)²](d−1)/d.
    # ReLU: 1/2 and 1/2 at depth 1; at depth L, E f² = 2^{−L} (each layer halves E‖h‖²/width).
    d, k, n = 10, 24, 3000
    if activation == "relu":
        expected_f2, expected_g2 = 0.5**depth, (0.5 if depth == 1 else None)
    else:
        psi, dpsi = _psi_np(activation)
        expected_f2 = _gauss_moment(lambda u: psi(u) ** 2)
        expected_g2 = (_gauss_moment(lambda u: dpsi(u) ** 2 * u * u) / d
                       + _gauss_moment(lambda u: dpsi(u) ** 2) * (d - 1) / d)
    xs = sphere(n, d, seed=91, radius=math.sqrt(d))
    f2, g2 = [], []
    for i in range(n):
        net = RandomNet.init(d, k, depth, activation=activation, generator=gen(20_000 + i), dtype=F64)
        out, grad = net.forward_and_input_grad(xs[i : i + 1])
        f2.append(float(out[0]) ** 2)
        g2.append(float(grad.square().sum()))
    checks = [(f2, expected_f2)] + ([(g2, expected_g2)] if expected_g2 is not None else [])
    for values, expected in checks:
        v = np.asarray(values)
        assert abs(v.mean() - expected) < Z * v.std() / math.sqrt(n), (v.mean(), expected)


def test_random_net_shapes_and_fan_in_scaling():
    net = RandomNet.init(30, 400, 2, generator=gen(95), dtype=F64)
    assert [tuple(W.shape) for W in net.Ws] == [(400, 30), (400, 400)]
    # entries N(0, 1/fan_in): the sample variance of each layer times its fan-in is ≈ 1
    for W, fan_in in zip(net.Ws, (30, 400), strict=True):
        assert float(W.var() * fan_in) == pytest.approx(1.0, abs=Z * math.sqrt(2 / W.numel()))
    assert set(net.a.tolist()) == {-1.0, 1.0}
    with pytest.raises(ValueError, match="activation"):
        RandomNet.init(3, 4, activation="sigmoid", generator=gen(0))


# ---------------------------------------------------------------------------------------------
# NTK model (Allen-Zhu & Li Def. 5.5)


@pytest.mark.parametrize(("bias", "sigma"), [(0.0, 0.3), (0.4, 0.2), (0.25, 1e-7)])
def test_ntk_features_are_the_symmetric_network_tangent(bias, sigma):
    # Φ(x) = ∂f(x)/∂W of the smoothed symmetric net at W₀ (the NTK feature map, tangent sign)
    d, m = 5, 7
    model = NTKModel.init(d, m, generator=gen(101), bias=bias, sigma_rho=sigma, dtype=F64)
    x = torch.randn(4, d, generator=gen(102), dtype=F64)
    phi = model.features(x)
    assert phi.shape == (4, m * d)
    for j in range(x.shape[0]):
        W = model.W.clone().requires_grad_(True)
        net = SymmetricReLUNet(W, model.b, model.sigma_rho)
        (g,) = torch.autograd.grad(net(x[j : j + 1]).sum(), W)
        torch.testing.assert_close(phi[j], g.reshape(-1), atol=1e-12, rtol=1e-10)
    # p(x) = scale <Φ(x), vec V>, and from_network rebuilds the same features
    model.V = torch.randn(m, d, generator=gen(103), dtype=F64)
    torch.testing.assert_close(model(x), model.scale * phi @ model.V.reshape(-1), atol=1e-13, rtol=1e-11)
    twin = NTKModel.from_network(SymmetricReLUNet(model.W, model.b, model.sigma_rho))
    torch.testing.assert_close(twin.features(x), phi, atol=0, rtol=0)


def test_ntk_with_zero_smoothing_uses_the_indicators_of_the_definition():
    model = NTKModel.init(4, 6, generator=gen(111), bias=0.5, sigma_rho=0.0, dtype=F64)
    x = torch.randn(50, 4, generator=gen(112), dtype=F64)
    u = x @ model.W.T
    expected = (u >= 0.5).to(F64) + (u <= -0.5).to(F64)
    torch.testing.assert_close(model.coefficients(x), expected, atol=0, rtol=0)
    # vanishing smoothing converges to them (away from the ties |u| = b)
    near = NTKModel(model.W, model.b, torch.full((6,), 1e-9, dtype=F64))
    far = ((u.abs() - 0.5).abs() > 1e-6)
    torch.testing.assert_close(near.coefficients(x)[far], expected[far], atol=1e-12, rtol=0)


def test_ntk_function_is_odd():
    # c_i is even in u_i, so p(−x) = −p(x): the tangent of an odd network (docs/theory.md §2)
    model = random_ntk(sigma=0.3, bias=0.4, seed=121)
    x = torch.randn(20, model.W.shape[1], generator=gen(122), dtype=F64)
    torch.testing.assert_close(model(-x), -model(x), atol=1e-13, rtol=0)


def test_ntk_model_fits_sparse_coding_data():
    # Thm 5.6 needs M = I, σ_x = 0: the NTK model fits such clean data (its failure is robustness)
    d, k = 30, 4
    problem = _problem(d, k, "identity", seed=131)
    train = problem.sample(600, generator=gen(132))
    test = problem.sample(1000, generator=gen(133))
    model = NTKModel.init(d, 60, generator=gen(134), bias=0.0, sigma_rho=0.5, dtype=F64)
    fit(model, (train.x, train.y), FitConfig(steps=300, lr=2.0, batch=600), generator=gen(135))
    assert accuracy(model, test.x, test.y) > 0.9


# ---------------------------------------------------------------------------------------------
# linear models


def _problem(d, k, dictionary, seed, sigma_x=0.0):
    M = make_dictionary(dictionary, d, d, generator=gen(seed), dtype=F64)
    w = make_teacher(d, generator=gen(seed + 1), dtype=F64)
    levels = ((1.0, 1.0 / d), (1.0 / math.sqrt(k), k / d))
    return SparseCodingProblem(M, w, levels, sigma_x, 0.0, 0.0)


def test_oracle_linear_model_is_the_teacher_through_the_dictionary():
    problem = _problem(40, 5, "orthogonal", seed=141)
    batch = problem.sample(500, generator=gen(142))
    oracle = LinearModel.oracle(problem.M, problem.w_star)
    torch.testing.assert_close(oracle(batch.x), (batch.x @ problem.M) @ problem.w_star, atol=1e-12, rtol=0)
    # noiseless orthogonal data: <w*, Mᵀx> = <w*, z>, so every sign is right except exact
    # ties <w*, z> = 0 (label +1), where round-off decides
    torch.testing.assert_close(oracle(batch.x), batch.z @ problem.w_star, atol=1e-12, rtol=0)
    clear = (batch.z @ problem.w_star).abs() > 1e-9
    assert 0.8 < float(clear.to(F64).mean()) < 1
    assert accuracy(oracle, batch.x[clear], batch.y[clear]) == 1.0


def test_logistic_regression_beats_chance_on_sparse_coding_data():
    problem = _problem(40, 5, "orthogonal", seed=151, sigma_x=0.3)
    train = problem.sample(2000, generator=gen(152))
    test = problem.sample(2000, generator=gen(153))
    model = LinearModel.logistic(train.x, train.y, C=10.0)
    assert model.v.dtype == F64
    acc = accuracy(model, test.x, test.y)
    assert acc > 0.85, acc
    # and it learned the teacher's direction M w*
    cos = float(model.v @ (problem.M @ problem.w_star)) / float(model.v.norm() * math.sqrt(40))
    assert cos > 0.8, cos


def test_logistic_regression_needs_two_classes():
    x = torch.randn(5, 3, dtype=F64)
    with pytest.raises(ValueError, match="both labels"):
        LinearModel.logistic(x, torch.ones(5, dtype=F64))


# ---------------------------------------------------------------------------------------------
# projection onto the lazy-regime ball


def test_project_rows_onto_the_two_infinity_ball():
    d, m, radius = 6, 50, 0.5
    net = LazyReLUNet.init(d, m, generator=gen(161), dtype=F64)
    dev = torch.randn(m, d, generator=gen(162), dtype=F64)
    dev = dev / dev.norm(dim=1, keepdim=True) * torch.linspace(0.1, 1.0, m, dtype=F64)[:, None]
    net.W = net.W0 + dev
    before = net.W.clone()
    inside = before.sub(net.W0).norm(dim=1) <= radius
    assert 0 < int(inside.sum()) < m
    net.project_(radius)
    after = net.deviation()
    assert bool((after <= radius * (1 + 1e-12)).all())
    # rows inside are untouched bit for bit; rows outside land on the sphere, same direction
    assert torch.equal(net.W[inside], before[inside])
    torch.testing.assert_close(after[~inside], torch.full_like(after[~inside], radius), atol=1e-12, rtol=0)
    cos = F.cosine_similarity(net.W[~inside] - net.W0[~inside], dev[~inside], dim=1)
    torch.testing.assert_close(cos, torch.ones_like(cos), atol=1e-12, rtol=0)
    assert torch.equal(net.W0, LazyReLUNet.init(d, m, generator=gen(161), dtype=F64).W0)


def test_project_onto_the_frobenius_ball():
    net = perturbed_lazy(seed=171)
    dev = net.W - net.W0
    total = float(dev.norm())
    net.project_(total / 2, ball="frobenius")
    torch.testing.assert_close(net.W - net.W0, dev / 2, atol=1e-13, rtol=0)
    kept = net.W.clone()
    net.project_(total, ball="frobenius")  # already inside: nothing moves
    assert torch.equal(net.W, kept)
    with pytest.raises(ValueError, match="ball"):
        net.project_(1.0, ball="spectral")


# ---------------------------------------------------------------------------------------------
# fit: SGD, ball constraints, adversarial training, divergence


def _sphere_task(d=16, seed=181):
    beta = torch.randn(d, generator=gen(seed), dtype=F64)

    def sample(n, g):
        x = torch.randn(n, d, generator=g, dtype=F64)
        x = x / x.norm(dim=1, keepdim=True)
        return x, torch.where(x @ beta >= 0, 1.0, -1.0).to(F64)

    return sample


def test_fit_with_stop_ends_at_the_first_step_outside_the_ball():
    d, m, c0 = 10, 64, 3.0
    radius = c0 / math.sqrt(m)
    sample = _sphere_task(d)
    config = FitConfig(steps=500, lr=1.0, batch=16, constraint="stop", radius=radius)
    net = LazyReLUNet.init(d, m, generator=gen(191), dtype=F64)
    hist = fit(net, sample, config, generator=gen(192))
    t = hist.stopped_at
    assert t is not None and hist.stop_reason == "ball" and 0 < t < 499
    assert hist.steps == t + 1
    assert bool((hist.max_deviation[:-1] <= radius).all()) and hist.max_deviation[-1] > radius
    # the model keeps the weights before the step that left: replay t unconstrained steps
    free = LazyReLUNet.init(d, m, generator=gen(191), dtype=F64)
    replay = fit(free, sample, FitConfig(steps=t, lr=1.0, batch=16), generator=gen(192))
    assert torch.equal(net.W, free.W)
    np.testing.assert_array_equal(replay.loss, hist.loss[:-1])
    assert float(net.deviation().max()) <= radius


@pytest.mark.parametrize("every", [1, 7])
def test_fit_with_project_ends_inside_the_ball(every):
    d, m, c0 = 10, 64, 2.0
    radius = c0 / math.sqrt(m)
    sample = _sphere_task(d, seed=201)
    config = FitConfig(steps=60, lr=1.0, batch=16, constraint="project", radius=radius, project_every=every)
    net = LazyReLUNet.init(d, m, generator=gen(202), dtype=F64)
    hist = fit(net, sample, config, generator=gen(203))
    assert hist.stopped_at is None and hist.steps == 60
    assert float(net.deviation().max()) <= radius * (1 + 1e-12)
    projected = [t for t in range(60) if (t + 1) % every == 0 or t == 59]
    assert bool((hist.max_deviation[projected] <= radius * (1 + 1e-12)).all())
    # the constraint was active: unconstrained training leaves the ball
    free = LazyReLUNet.init(d, m, generator=gen(202), dtype=F64)
    free_hist = fit(free, sample, FitConfig(steps=60, lr=1.0, batch=16), generator=gen(203))
    assert free_hist.max_deviation[-1] > 2 * radius
    if every > 1:
        assert bool((hist.max_deviation > radius * (1 + 1e-9)).any())


def test_fit_frobenius_ball_on_the_ntk_model():
    model = NTKModel.init(8, 12, generator=gen(211), sigma_rho=0.3, dtype=F64)
    config = FitConfig(steps=40, lr=1.0, batch=32, constraint="project", radius=0.2, ball="frobenius")
    hist = fit(model, _sphere_task(8, seed=212), config, generator=gen(213))
    assert float((model.V - model.V0).norm()) <= 0.2 * (1 + 1e-12)
    assert hist.fro_deviation[-1] == pytest.approx(float((model.V - model.V0).norm()), rel=1e-12)


def test_fit_lowers_the_loss_and_visits_a_fixed_set_in_epochs():
    x, y = _sphere_task(5, seed=221)(40, gen(222))
    seen = []

    class Spy(LinearModel):
        def loss_grad_and_output(self, xb, yb):
            seen.append(xb.clone())
            return super().loss_grad_and_output(xb, yb)

    model = Spy(torch.zeros(5, dtype=F64))
    hist = fit(model, (x, y), FitConfig(steps=40, lr=2.0, batch=10), generator=gen(223))
    assert hist.loss[-5:].mean() < 0.6 * hist.loss[0]
    assert hist.loss[0] == pytest.approx(math.log(2), rel=1e-12)  # f ≡ 0 at the start
    # each epoch of 4 batches is a permutation of the 40 examples
    for epoch in range(10):
        rows = torch.cat(seen[4 * epoch : 4 * epoch + 4])
        assert torch.equal(torch.sort(rows[:, 0]).values, torch.sort(x[:, 0]).values)
    assert np.isnan(hist.max_deviation).all()  # a linear model has no init to compare to


def test_adversarial_fit_sees_the_fgm_loss_in_closed_form():
    # FGM ℓ₂ on f = <v,x> + c: δ = −τ y v/‖v‖, so the margin is y f(x) − τ‖v‖
    x, y = _sphere_task(6, seed=231)(50, gen(232))
    v = torch.randn(6, generator=gen(233), dtype=F64)
    model = LinearModel(v.clone(), 0.1)
    tau = 0.2
    hist = fit(model, (x, y), FitConfig(steps=1, lr=1e-9, batch=50), attack=make_attack("fgm", "l2"),
               tau=tau, generator=gen(234))
    margin = y * (x @ v + 0.1) - tau * v.norm()
    assert hist.loss[0] == pytest.approx(float(F.softplus(-margin).mean()), rel=1e-12)
    assert hist.accuracy[0] == pytest.approx(float((margin >= 0).to(F64).mean()))


def test_fit_is_reproducible_from_the_generator():
    def run():
        net = LazyReLUNet.init(8, 32, generator=gen(241), dtype=F64)
        hist = fit(net, _sphere_task(8, seed=242), FitConfig(steps=10, lr=0.5, batch=8),
                   attack=make_attack("pgd", "l2", pgd_steps=3), tau=0.1, generator=gen(243))
        return net, hist

    (a, ha), (b, hb) = run(), run()
    assert torch.equal(a.W, b.W)
    np.testing.assert_array_equal(ha.loss, hb.loss)


def test_fit_raises_divergence_naming_the_step():
    sample = _sphere_task(4, seed=251)
    calls = []

    def poisoned(n, g):
        x, y = sample(n, g)
        calls.append(1)
        if len(calls) == 4:
            x[0, 0] = float("nan")
        return x, y

    model = LinearModel.zeros(4, dtype=F64)
    with pytest.raises(DivergenceError, match="step 3"):
        fit(model, poisoned, FitConfig(steps=10, lr=0.1, batch=4), generator=gen(252))
    # a finite loss (f ≡ 0) but a step that overflows float32 weights
    x = torch.full((4, 4), 1e38)
    y = torch.tensor([1.0, 1.0, 1.0, -1.0])
    with pytest.raises(DivergenceError, match="step 0.*weight"):
        fit(LinearModel.zeros(4), (x, y), FitConfig(steps=3, lr=100.0, batch=4), generator=gen(254))


def test_fit_config_is_validated():
    with pytest.raises(ConfigError, match="lr"):
        FitConfig(steps=1, lr=0.0, batch=1)
    with pytest.raises(ConfigError, match="radius"):
        FitConfig(steps=1, lr=0.1, batch=1, constraint="stop")
    with pytest.raises(ConfigError, match="ball"):
        FitConfig(steps=1, lr=0.1, batch=1, constraint="project", radius=1.0, ball="l1")
    with pytest.raises(ConfigError, match="constraint"):
        FitConfig(steps=1, lr=0.1, batch=1, constraint="clip", radius=1.0)
    with pytest.raises(ValueError, match="deviation"):
        fit(LinearModel.zeros(3), _sphere_task(3), FitConfig(steps=1, lr=0.1, batch=2, constraint="stop",
                                                               radius=1.0), generator=gen(0))


# ---------------------------------------------------------------------------------------------
# end to end: a lazily trained net is not robust (Wang et al. §5.2)


@pytest.fixture(scope="module")
def trained_lazy():
    d, m, c0 = 16, 512, 10.0
    sample = _sphere_task(d, seed=261)
    net = LazyReLUNet.init(d, m, generator=gen(262))
    x, y = sample(400, gen(263))
    x, y = x.float(), y.float()
    hist = fit(net, lambda n, g: tuple(t.float() for t in sample(n, g)),
               FitConfig(steps=400, lr=1.0, batch=32, constraint="stop", radius=c0 / math.sqrt(m)),
               generator=gen(264))
    return net, x, y, hist


@pytest.mark.parametrize(("norm", "tau"), [("l2", 0.3), ("linf", 0.1)])
def test_pgd_on_a_lazy_net_stays_in_budget_and_lowers_accuracy(trained_lazy, norm, tau):
    net, x, y, hist = trained_lazy
    assert float(net.deviation().max()) <= 10.0 / math.sqrt(512)
    clean = accuracy(net, x, y)
    assert clean > 0.85, clean
    attack = make_attack("pgd", norm, pgd_steps=10)
    delta = attack(net, x, y, tau, generator=gen(271))
    size = delta.norm(dim=1) if norm == "l2" else delta.abs().amax(dim=1)
    assert float(size.max()) <= tau * (1 + 1e-6)
    robust = float(robust_correct(net, x, y, attack, tau, generator=gen(271)).float().mean())
    assert robust < clean - 0.4, (clean, robust)
