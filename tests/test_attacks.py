"""Tests of purify.attacks and purify.structured_attacks: budgets, closed forms on a linear
model, PGD's best-iterate tracking, the shrink attack on a pure network, transfer.

Convergence of the converged attack and its effort table: tests/test_attack_convergence.py.
"""

from __future__ import annotations

import math

import pytest
import torch
from fixtures import LinearModel, gen
from hypothesis import given, settings
from hypothesis import strategies as st

from purify.attacks import (
    ALL_ATTACKS,
    ATTACKS,
    FGM,
    NORMS,
    PGD,
    SCHEDULES,
    ConvergedPGD,
    DenseAttack,
    NoiseAttack,
    Norm,
    make_attack,
)
from purify.learners import SymmetricReLUNet
from purify.structured_attacks import Shrink, Transfer, smoother_copy

F64 = torch.float64


def random_net(d: int, m: int, seed: int) -> SymmetricReLUNet:
    g = gen(seed)
    W = torch.randn(m, d, generator=g, dtype=F64) / math.sqrt(d)
    b = 0.2 * (0.5 + torch.rand(m, generator=g, dtype=F64))
    s = 0.05 * (0.5 + torch.rand(m, generator=g, dtype=F64))
    return SymmetricReLUNet(W, b, s)


def data(n: int, d: int, seed: int):
    g = gen(seed)
    x = torch.randn(n, d, generator=g, dtype=F64)
    y = torch.where(torch.rand(n, generator=g, dtype=F64) < 0.5, 1.0, -1.0).to(F64)
    return x, y


def build(name: str, norm: str, d: int, seed: int = 0, **kw):
    direction = torch.randn(d, generator=gen(seed + 100), dtype=F64)
    return make_attack(name, norm, dense_direction=direction, **kw)


def pnorm(norm: str, delta: torch.Tensor) -> torch.Tensor:
    return delta.norm(dim=1) if norm == "l2" else delta.abs().amax(dim=1)


# ---------------------------------------------------------------------------- budgets


@settings(max_examples=40, deadline=None, derandomize=True, database=None)
@given(
    name=st.sampled_from(ATTACKS),
    norm=st.sampled_from(NORMS),
    tau=st.floats(1e-6, 1e3),
    n=st.integers(1, 6),
    d=st.integers(1, 25),
    m=st.integers(1, 12),
    seed=st.integers(0, 2**31 - 1),
    restarts=st.integers(1, 2),
    random_start=st.booleans(),
)
def test_every_attack_respects_the_budget(name, norm, tau, n, d, m, seed, restarts, random_start):
    net = random_net(d, m, seed)
    x, y = data(n, d, seed + 1)
    attack = build(name, norm, d, seed, pgd_steps=3, pgd_restarts=restarts, pgd_random_start=random_start)
    delta = attack(net, x, y, tau, generator=gen(seed + 2))
    assert delta.shape == x.shape and delta.dtype == x.dtype
    assert bool(torch.isfinite(delta).all())
    assert bool((pnorm(norm, delta) <= tau * (1 + 1e-6)).all())


@pytest.mark.parametrize("name", ATTACKS)
@pytest.mark.parametrize("tau", [0.0, -1.0, float("nan")])
def test_nonpositive_radius_raises(name, tau):
    net = random_net(5, 4, 0)
    x, y = data(3, 5, 1)
    with pytest.raises(ValueError, match="tau"):
        build(name, "l2", 5)(net, x, y, tau, generator=gen(0))


def test_make_attack_unknown_name_names_the_allowed_ones():
    with pytest.raises(ValueError) as e:
        make_attack("cw", "l2")
    for name in ALL_ATTACKS:
        assert name in str(e.value)


def test_unknown_norm_names_the_allowed_ones():
    with pytest.raises(ValueError) as e:
        make_attack("fgm", "l1")
    for norm in NORMS:
        assert norm in str(e.value)


def test_dense_attack_needs_a_direction_and_pgd_needs_steps():
    with pytest.raises(ValueError):
        make_attack("dense", "l2")
    with pytest.raises(ValueError):
        PGD("l2", steps=0)
    with pytest.raises(ValueError):
        PGD("l2", restarts=0)


@pytest.mark.parametrize("norm", NORMS)
def test_projection_is_the_euclidean_projection_onto_the_ball(norm):
    # inside points are fixed; outside points land on the sphere and are the nearest point:
    # ℓ₂ radial scaling, ℓ∞ coordinate clipping
    N = Norm(norm)
    v = torch.randn(50, 6, generator=gen(3), dtype=F64) * 2
    tau = 1.0
    p = N.project(v, tau)
    inside = N.norm(v) <= tau
    torch.testing.assert_close(p[inside], v[inside], atol=0, rtol=0)
    torch.testing.assert_close(N.norm(p[~inside]), torch.full((int((~inside).sum()),), tau, dtype=F64))
    if norm == "l2":
        expected = v * (tau / v.norm(dim=1, keepdim=True)).clamp(max=1)
    else:
        expected = v.clamp(-tau, tau)
    torch.testing.assert_close(p, expected, atol=1e-15, rtol=0)


@pytest.mark.parametrize("norm", NORMS)
def test_random_start_is_inside_and_spread_over_the_ball(norm):
    N = Norm(norm)
    d, n, tau = 5, 20000, 0.7
    s = N.random_start((n, d), tau, generator=gen(4), device="cpu", dtype=F64)
    assert bool((N.norm(s) <= tau * (1 + 1e-12)).all())
    if norm == "l2":
        # uniform in the ball: Pr[‖s‖ ≤ τ/2] = 2^{-d}
        frac, p = float((s.norm(dim=1) <= tau / 2).double().mean()), 2.0**-d
    else:
        # uniform in the cube: Pr[s_1 ≤ τ/2] = 3/4
        frac, p = float((s[:, 0] <= tau / 2).double().mean()), 0.75
    assert abs(frac - p) < 5 * math.sqrt(p * (1 - p) / n)


# ---------------------------------------------------------------------------- FGM


@pytest.mark.parametrize("norm", NORMS)
def test_fgm_closed_form_on_linear_model(norm):
    d = 7
    w = torch.tensor([0.5, -2.0, 0.0, 1.0, 3.0, -0.1, 0.25], dtype=F64)
    x, y = data(9, d, 5)
    tau = 0.37
    delta = FGM(norm)(LinearModel(w), x, y, tau, generator=gen(0))
    direction = w / w.norm() if norm == "l2" else torch.sign(w)
    torch.testing.assert_close(delta, -tau * y[:, None] * direction[None, :], atol=1e-15, rtol=1e-14)
    # the margin drops by exactly τ‖w‖_q, the most any δ in the ball can achieve
    q = w.norm() if norm == "l2" else w.abs().sum()
    torch.testing.assert_close(y * ((x + delta) @ w), y * (x @ w) - tau * q, atol=1e-13, rtol=0)


@pytest.mark.parametrize("norm", NORMS)
def test_fgm_zero_gradient_gives_zero_perturbation(norm):
    x, y = data(4, 6, 6)
    delta = FGM(norm)(LinearModel(torch.zeros(6, dtype=F64)), x, y, 1.0, generator=gen(0))
    assert torch.equal(delta, torch.zeros_like(x))


def test_fgm_zero_out_threshold_uses_the_dual_norm():
    # w = c·1 in d = 5: ‖w‖₂ = c√5 and ‖w‖₁ = 5c.  With c = 3e-9 and tolerance 1e-8 the ℓ₂
    # gradient is "flat" (6.7e-9) while the ℓ∞ attack's dual norm ℓ₁ is not (1.5e-8).
    w = torch.full((5,), 3e-9, dtype=F64)
    x, y = data(3, 5, 7)
    d2 = FGM("l2", zero_tol=1e-8)(LinearModel(w), x, y, 0.5, generator=gen(0))
    dinf = FGM("linf", zero_tol=1e-8)(LinearModel(w), x, y, 0.5, generator=gen(0))
    assert torch.equal(d2, torch.zeros_like(x))
    torch.testing.assert_close(dinf, -0.5 * y[:, None] * torch.ones_like(x))


def test_fgm_zeroes_only_the_flat_examples():
    # a symmetric net with b > 0 and tiny smoothing is flat near x = 0 and not far from it
    net = SymmetricReLUNet(
        torch.eye(3, dtype=F64), torch.full((3,), 1.0, dtype=F64), torch.full((3,), 1e-3, dtype=F64)
    )
    x = torch.tensor([[0.0, 0.0, 0.0], [2.0, 0.0, 0.0]], dtype=F64)
    y = torch.tensor([1.0, 1.0], dtype=F64)
    delta = FGM("l2")(net, x, y, 0.1, generator=gen(0))
    assert torch.equal(delta[0], torch.zeros(3, dtype=F64))
    torch.testing.assert_close(delta[1], torch.tensor([-0.1, 0.0, 0.0], dtype=F64))


# ---------------------------------------------------------------------------- PGD


@pytest.mark.parametrize("norm", NORMS)
def test_pgd_without_random_start_reaches_fgm_optimum_on_linear_model(norm):
    w = torch.tensor([1.0, -0.5, 2.0, 0.0, 0.3], dtype=F64)
    x, y = data(8, 5, 8)
    tau = 0.4
    model = LinearModel(w)
    fgm = FGM(norm)(model, x, y, tau, generator=gen(0))
    pgd = PGD(norm, steps=5, rel_step=0.5, random_start=False)(model, x, y, tau, generator=gen(0))
    torch.testing.assert_close(pgd, fgm, atol=1e-14, rtol=1e-12)


@pytest.mark.parametrize("norm", NORMS)
def test_pgd_with_random_start_reaches_the_linear_optimum(norm):
    # rel_step = 1.  ℓ∞: total movement 10τ ≥ 2τ reaches the cube's corner from any start.
    # ℓ₂: u = −yŵ; from any ‖δ₀‖ ≤ τ, δ₀ + τu has <·,u> ≥ 0 and norm ≥ τ, so the first iterate
    # is on the sphere at angle θ₁ ≤ π/2 from u; then tan θ' = sin θ/(cos θ + 1) = tan(θ/2),
    # so θ₁₀ ≤ π/2¹⁰ and the margin gap τ‖w‖(1 − cos θ₁₀) ≤ τ‖w‖ π²/2²¹.
    w = torch.tensor([1.0, -0.5, 2.0, 0.7, 0.3], dtype=F64)
    x, y = data(200, 5, 9)
    tau = 0.4
    model = LinearModel(w)
    q = float(w.norm() if norm == "l2" else w.abs().sum())
    optimum = y * (x @ w) - tau * q
    delta = PGD(norm, steps=10, rel_step=1.0, random_start=True)(model, x, y, tau, generator=gen(1))
    margin = y * model(x + delta)
    assert bool((margin >= optimum - 1e-12).all())  # nothing beats the closed-form minimizer
    bound = 1e-12 if norm == "linf" else tau * q * math.pi**2 / 2**21 + 1e-12
    assert float((margin - optimum).max()) <= bound
    # the random start really was random (the test is not the random_start=False one)
    start = PGD(norm, steps=1, rel_step=1e-9, random_start=True)(model, x, y, tau, generator=gen(1))
    assert float(pnorm(norm, start).min()) < 0.99 * tau


@pytest.mark.parametrize("norm", NORMS)
def test_pgd_never_worse_than_its_starting_point(norm):
    # best-iterate tracking includes δ = 0 when random_start=False
    net = random_net(10, 16, 10)
    x, y = data(64, 10, 11)
    delta = PGD(norm, steps=4, rel_step=0.7, random_start=False)(net, x, y, 0.5, generator=gen(0))
    assert bool((y * net(x + delta) <= y * net(x) + 1e-12).all())
    assert float((y * net(x + delta) - y * net(x)).max()) < 0  # and it actually attacks


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("steps", [1, 5])
def test_pgd_with_unit_step_is_per_example_at_least_as_strong_as_fgm(norm, steps):
    # with rel_step = 1 and no random start the first PGD iterate is the FGM perturbation
    net = random_net(12, 20, 12)
    x, y = data(64, 12, 13)
    tau = 0.6
    fgm = FGM(norm)(net, x, y, tau, generator=gen(0))
    pgd = PGD(norm, steps=steps, rel_step=1.0, random_start=False)(net, x, y, tau, generator=gen(0))
    m_fgm, m_pgd = y * net(x + fgm), y * net(x + pgd)
    assert bool((m_pgd <= m_fgm + 1e-12).all())
    if steps > 1:
        assert float((m_fgm - m_pgd).max()) > 1e-6  # more steps found something FGM missed


@pytest.mark.parametrize("norm", NORMS)
def test_default_pgd_at_least_as_strong_as_fgm_in_aggregate(norm):
    net = random_net(12, 20, 14)
    x, y = data(128, 12, 15)
    tau = 0.6
    m_fgm = y * net(x + FGM(norm)(net, x, y, tau, generator=gen(0)))
    m_pgd = y * net(x + PGD(norm, steps=10)(net, x, y, tau, generator=gen(1)))
    assert float(m_pgd.mean()) <= float(m_fgm.mean()) + 1e-9


@pytest.mark.parametrize("norm", NORMS)
def test_more_restarts_and_more_steps_never_weaken_pgd(norm):
    # with a shared generator seed the first restart is identical, and the iterates of a short
    # run are a prefix of a longer run with the same step size
    net = random_net(10, 16, 16)
    x, y = data(64, 10, 17)
    tau = 0.5

    def margin(**kw):
        return y * net(x + PGD(norm, rel_step=0.3, **kw)(net, x, y, tau, generator=gen(5)))

    one, three = margin(steps=4, restarts=1), margin(steps=4, restarts=3)
    assert bool((three <= one + 1e-12).all())
    assert float((one - three).max()) > 0  # extra restarts help somewhere
    short, long = margin(steps=2), margin(steps=6)
    assert bool((long <= short + 1e-12).all())


# ---------------------------------------------------------------------------- dense and noise


@pytest.mark.parametrize("norm", NORMS)
def test_dense_attack_closed_form_and_model_independence(norm):
    d = 9
    M = torch.linalg.qr(torch.randn(d, d, generator=gen(18), dtype=F64))[0]
    w_star = torch.where(torch.rand(d, generator=gen(19), dtype=F64) < 0.5, 1.0, -1.0).to(F64)
    v = M @ w_star
    x, y = data(6, d, 20)
    tau = 0.3
    attack = DenseAttack(norm, v)
    a = attack(random_net(d, 5, 1), x, y, tau, generator=gen(0))
    b = attack(LinearModel(torch.ones(d, dtype=F64)), x, y, tau, generator=gen(1))
    direction = v / v.norm() if norm == "l2" else torch.sign(v)
    torch.testing.assert_close(a, -tau * y[:, None] * direction[None, :], atol=1e-15, rtol=1e-14)
    assert torch.equal(a, b)


@pytest.mark.parametrize("norm", NORMS)
def test_noise_attack_has_exact_norm_and_random_direction(norm):
    n, d, tau = 4000, 6, 0.8
    x, y = data(n, d, 21)
    delta = NoiseAttack(norm)(LinearModel(torch.ones(d, dtype=F64)), x, y, tau, generator=gen(22))
    torch.testing.assert_close(pnorm(norm, delta), torch.full((n,), tau, dtype=F64), atol=1e-14, rtol=0)
    if norm == "linf":
        assert bool((delta.abs() == tau).all())
    # uniform direction: E δ = 0 and E δ_1² = τ²/d (ℓ₂) or τ² (ℓ∞); independent of the label
    second = tau**2 / d if norm == "l2" else tau**2
    assert float(delta.mean(dim=0).abs().max()) < 5 * math.sqrt(second / n)
    assert float((delta * y[:, None]).mean(dim=0).abs().max()) < 5 * math.sqrt(second / n)
    # a different generator gives different noise
    other = NoiseAttack(norm)(LinearModel(torch.ones(d, dtype=F64)), x, y, tau, generator=gen(23))
    assert not torch.equal(delta, other)


# ---------------------------------------------------------------------------- strong attacks


def problem_tensors(d: int, D: int, seed: int):
    g = gen(seed)
    M = torch.randn(d, D, generator=g, dtype=F64)
    M = M / M.norm(dim=0, keepdim=True)
    w_star = torch.where(torch.rand(D, generator=g, dtype=F64) < 0.5, 1.0, -1.0).to(F64)
    return M, w_star


@settings(max_examples=40, deadline=None, derandomize=True, database=None)
@given(
    kind=st.sampled_from(("converged_pgd", "shrink", "transfer")),
    norm=st.sampled_from(NORMS),
    schedule=st.sampled_from(SCHEDULES),
    tau=st.floats(1e-6, 1e3),
    n=st.integers(1, 6),
    d=st.integers(1, 25),
    D=st.integers(1, 30),
    m=st.integers(1, 12),
    seed=st.integers(0, 2**31 - 1),
)
def test_strong_attacks_respect_the_budget(kind, norm, schedule, tau, n, d, D, m, seed):
    net = random_net(d, m, seed)
    x, y = data(n, d, seed + 1)
    M, w_star = problem_tensors(d, D, seed + 3)
    if kind == "converged_pgd":
        attack = ConvergedPGD(norm, steps=(3, 5), dense_direction=M @ w_star, schedule=schedule)
    elif kind == "shrink":
        attack = Shrink(norm, M, w_star, polish_steps=3, schedule=schedule)
    else:
        attack = Transfer(norm, smoother_copy(net, 3.0), ConvergedPGD(norm, steps=3, starts=("random",)))
    delta = attack(net, x, y, tau, generator=gen(seed + 2))
    assert delta.shape == x.shape and delta.dtype == x.dtype
    assert bool(torch.isfinite(delta).all())
    assert bool((pnorm(norm, delta) <= tau * (1 + 1e-6)).all())
    if kind == "shrink":  # the candidates themselves are inside the ball
        assert bool((pnorm(norm, attack.candidates(x, y, tau).flatten(0, 1)) <= tau * (1 + 1e-9)).all())


def test_make_attack_builds_the_strong_attacks_and_checks_their_inputs():
    M, w_star = problem_tensors(6, 6, 0)
    a = make_attack("converged_pgd", "linf", dense_direction=M @ w_star, steps=7, starts=("zero", "dense"),
                    rel_step=0.5, schedule="apgd")
    assert isinstance(a, ConvergedPGD) and a.steps == (7,) and a.starts == ("zero", "dense")
    assert a.rel_step == 0.5 and a.schedule == "apgd" and a.norm.name == "linf"
    assert isinstance(make_attack("shrink", "l2", dictionary=M, teacher=w_star), Shrink)
    assert isinstance(make_attack("pgd", "l2", pgd_steps=3), PGD)  # the old keywords still work
    with pytest.raises(ValueError, match="dictionary"):
        make_attack("shrink", "l2", dictionary=M)
    with pytest.raises(ValueError, match="dense"):
        make_attack("converged_pgd", "l2")  # the default starts include the dense direction
    with pytest.raises(ValueError, match="starts"):
        ConvergedPGD("l2", starts=("zero", "corner"))
    with pytest.raises(ValueError, match="schedule"):
        ConvergedPGD("l2", starts=("zero",), schedule="linear")
    with pytest.raises(ValueError, match="steps"):
        ConvergedPGD("l2", starts=("zero",), steps=(10, 0))
    with pytest.raises(ValueError, match="D"):
        Shrink("l2", M, w_star[:3])


def test_transfer_crafts_on_the_source_and_ignores_the_target():
    net = random_net(8, 10, 30)
    source = smoother_copy(net, 3.0)
    torch.testing.assert_close(source.sigma_rho, 3 * net.sigma_rho)
    assert source.W is net.W and source.b is net.b
    x, y = data(20, 8, 31)
    inner = PGD("l2", steps=5)
    delta = Transfer("l2", source, inner)(net, x, y, 0.4, generator=gen(1))
    assert torch.equal(delta, inner(source, x, y, 0.4, generator=gen(1)))
    other = Transfer("l2", source, inner)(LinearModel(torch.ones(8, dtype=F64)), x, y, 0.4, generator=gen(1))
    assert torch.equal(delta, other)
    assert not torch.equal(delta, inner(net, x, y, 0.4, generator=gen(1)))  # the source matters
    active = torch.arange(20) % 3 == 0  # a mask reaches the inner attack
    masked = Transfer("l2", source, inner)(net, x, y, 0.4, generator=gen(1), active=active)
    assert torch.equal(masked, inner(source, x, y, 0.4, generator=gen(1), active=active))
    assert bool((masked[~active] == 0).all()) and bool((masked[active] != 0).any())
    with pytest.raises(ValueError, match="linf"):
        Transfer("linf", source, inner)


def pure_network(D: int, seed: int, threshold: float):
    """Neurons ``w_j = sign(w*_j) M_j`` of an orthogonal ``M`` with bias ``threshold``, σ_ρ ≈ 0.

    ``f(x) = Σ_j sign(w*_j) ST(c_j)`` with ``c = Mᵀx`` and the soft threshold
    ``ST(c) = sign(c) max(|c| − b, 0)``: each neuron reads one pure feature.
    """
    M = torch.linalg.qr(torch.randn(D, D, generator=gen(seed), dtype=F64))[0]
    w_star = torch.where(torch.rand(D, generator=gen(seed + 1), dtype=F64) < 0.5, 1.0, -1.0).to(F64)
    net = SymmetricReLUNet(w_star[:, None] * M.T, torch.full((D,), threshold, dtype=F64),
                           torch.full((D,), 1e-7, dtype=F64))
    return net, M, w_star


def test_shrink_breaks_exactly_the_examples_a_hand_computation_says():
    # b = 0.5, τ = 0.4 (ℓ₂).  Every example has a contrary atom l with y w*_l c_l = −0.7 (it
    # contributes −0.2 to the margin).  "one a": one label atom with y w*_j c_j = a, margin
    # (a − 0.5) − 0.2; shrinking it by τ gives (a − τ − 0.5)₊ − 0.2 < 0 iff a < 0.7 + τ = 1.1.
    # "two a": two label atoms at a, margin 2(a − 0.5) − 0.2; one atom shrunk by τ leaves
    # (a − 0.9)₊ + (a − 0.5) − 0.2, two by τ/√2 each leave 2(a − 0.5 − τ/√2)₊ − 0.2:
    # a = 0.8 → 0.1 (survives) and −0.166 (broken); a = 0.95 → 0.3 and 0.134 (both survive).
    D, tau = 8, 0.4
    net, M, w_star = pure_network(D, 40, 0.5)
    cases = [(0.9,), (1.0,), (1.05,), (1.15,), (1.3,), (0.8, 0.8), (0.95, 0.95)]
    y = torch.tensor([1.0, -1.0] * 4, dtype=F64)[: len(cases)]
    z = torch.zeros(len(cases), D, dtype=F64)
    for i, values in enumerate(cases):
        for j, a in zip((0, 2), values, strict=False):
            z[i, j] = a * y[i] * w_star[j]
        z[i, 1] = -0.7 * y[i] * w_star[1]
    x = z @ M.T
    clean = y * net(x)
    assert bool((clean > 0.19).all())  # all correct with room: no tie decides a case

    def broken(**kw):
        attack = Shrink("l2", M, w_star, **kw)
        return (y * net(x + attack(net, x, y, tau, generator=gen(0))) < 0).tolist()

    one_atom = [True, True, True, False, False, False, False]
    by_hand = [True, True, True, False, False, True, False]
    assert broken(atoms=(1,), with_dense=False, polish_steps=0) == one_atom
    assert broken(atoms=(1, 2, 3, 5), with_dense=False, polish_steps=0) == by_hand
    # more candidates and the polish only add broken examples
    full = broken()
    assert all(f or not h for f, h in zip(full, by_hand, strict=True))
    # FGM moves every active coordinate at once, the contrary one included (growing it):
    # τ/√2 per atom for "one a" (margin a − 0.7 − √2τ < 0 iff a < 1.266), τ/√3 for "two a"
    # (2a − 1.2 − √3τ: −0.29 at 0.8, +0.007 at 0.95).  On this net it is the stronger one,
    # which is why shrink is an addition to the gradient attacks, not a replacement.
    fgm = (y * net(x + FGM("l2")(net, x, y, tau, generator=gen(0))) < 0).tolist()
    assert fgm == [True, True, True, True, False, True, False]
