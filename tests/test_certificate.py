"""The certified lower bound of ``purify.certificate`` and what the evaluation does with it.

Soundness against the strongest search purify has (converged PGD from many starts) and against
random points of the ball; the closed form where every neuron stays on one linear piece; the
float-error bound against float32 evaluations; and the optimisation's switch: skipping the
certified examples changes no stored number.
"""

from __future__ import annotations

import contextlib
import io
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures import assert_same_store

from purify import final_evaluation
from purify import schema as V
from purify import store as S
from purify.attacks import ConvergedPGD, Norm, attack_strength
from purify.certificate import certified, float_error, ideal_margin_lower_bound, margin_lower_bound
from purify.cli import main
from purify.evaluate import cascade
from purify.learners.ideal import IdealRobustModel
from purify.learners.linear import LinearModel
from purify.learners.symmetric import SymmetricReLUNet

F64 = torch.float64
TINY = [
    "--d", "32", "--k", "3", "--m", "64", "--clean-steps", "60", "--adv-steps", "20",
    "--n-test", "200", "--n-eval", "100", "--batch-size", "128", "--pgd-steps", "3",
    "--clean-snapshots", "4", "--adv-snapshots", "2", "--log-points", "10", "--seed", "0", "--quiet", "--no-analysis",
]


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _problem(ratio: float, dtype=F64, seed: int = 0, d: int = 12, m: int = 40, n: int = 60):
    """A small net with biases ``0.5 ‖w_i‖₂`` and ``σ_ρ = ratio · b`` (``ratio < 0.1``: the
    one-sided pass), inputs of norm about 1 and labels ``sign f(x)`` (all clean-correct)."""
    g = gen(seed)
    W = torch.randn(m, d, generator=g, dtype=F64) / d**0.5
    b = 0.5 * W.norm(dim=1)
    net = SymmetricReLUNet(W.to(dtype), b.to(dtype), (ratio * b).to(dtype))
    x = (torch.randn(n, d, generator=g, dtype=F64) / d**0.5).to(dtype)
    y = torch.where(net.forward(x) >= 0, 1.0, -1.0).to(dtype)
    return net, x, y


def _min_margin_found(net, x, y, tau, norm) -> torch.Tensor:
    """The smallest ``y f(x + δ)`` found: converged PGD from zero and 12 random starts, and
    2000 random points of the ball per example."""
    attack = ConvergedPGD(norm, steps=200, starts=("zero",) + ("random",) * 12, early_stop=False)
    delta = attack(net, x, y, tau, generator=gen(1))
    found = y * net.forward(x + delta)
    n_norm = Norm(norm)
    for _ in range(10):
        d = n_norm.random_start((x.shape[0] * 200, x.shape[1]), tau, generator=gen(_ + 2), device="cpu",
                                dtype=x.dtype).view(200, *x.shape)
        found = torch.minimum(found, (y * net.forward((x + d).flatten(0, 1)).view(200, -1)).amin(dim=0))
    return found


@pytest.mark.parametrize("norm", ["l2", "linf"])
@pytest.mark.parametrize("ratio", [0.05, 0.4])
def test_the_bound_is_below_every_margin_an_attack_finds(norm, ratio):
    net, x, y = _problem(ratio)
    tau = 0.1 if norm == "l2" else 0.02  # about half of the examples survive the search
    bound = margin_lower_bound(net, x, y, tau, norm)
    found = _min_margin_found(net, x, y, tau, norm)
    assert bool((bound <= found + 1e-12).all()), float((bound - found).max())
    # and a bound worth having: it proves at least half of what the search leaves standing
    # (21 of 31 to 43 of 45 here; bounding each neuron alone, as interval arithmetic does, proves far fewer)
    proven = certified(net, x, y, tau, norm)
    assert bool((found[proven] > 0).all())
    assert 2 * int(proven.sum()) >= int((found > 0).sum()) > 0


def test_the_bound_is_exact_where_every_neuron_stays_on_one_linear_piece():
    """Every ``<w_i, x + δ>`` stays far above ``b_i`` in the ball: ``f`` is affine there,
    ``f(x + δ) = Σ_i (<w_i, x + δ> − b_i)``, and its minimum over the ball is ``y f(x) −
    τ ‖Σ_i w_i‖_q`` (Hölder), which the relaxation must reach."""
    g = gen(5)
    d, m = 6, 10
    W = torch.rand(m, d, generator=g, dtype=F64) + 0.5  # positive rows: <w_i, x> ≫ 0 for x = 5·1
    b = torch.full((m,), 0.2, dtype=F64)
    net = SymmetricReLUNet(W, b, 0.01 * b)
    x = torch.full((3, d), 5.0, dtype=F64) + torch.rand(3, d, generator=g, dtype=F64)
    y = torch.ones(3, dtype=F64)
    for norm, tau in (("l2", 0.3), ("linf", 0.1)):
        exact = (x @ W.T - b).sum(dim=1) - tau * Norm(norm).dual_norm(W.sum(dim=0, keepdim=True))
        torch.testing.assert_close(margin_lower_bound(net, x, y, tau, norm), exact, rtol=1e-12, atol=1e-12)
        # with the label flipped the same network is wrong everywhere in the ball
        assert not bool(certified(net, x, -y, tau, norm).any())


@pytest.mark.parametrize("ratio", [0.05, 0.4])
def test_float_error_bounds_the_float32_forward_inside_the_ball(ratio):
    net64, x, y = _problem(ratio, d=50, m=200, n=40)
    net32 = SymmetricReLUNet(net64.W.float(), net64.b.float(), net64.sigma_rho.float())
    tau = 0.3
    bound = float_error(net32, x.float(), tau, "l2", torch.float32)
    worst = torch.zeros_like(bound)
    for s in range(20):
        d = Norm("l2").random_start(tuple(x.shape), tau, generator=gen(s), device="cpu", dtype=F64)
        x32 = x.float() + d.float()  # the attack adds δ in float32
        exact = net64.forward(x32.double())
        worst = torch.maximum(worst, (net32.forward(x32).double() - exact).abs())
    assert bool((worst <= bound).all())
    assert float(worst.max()) > 0  # float32 does round here: the test can fail


def test_models_without_a_certificate_certify_nothing():
    linear = LinearModel(torch.ones(4, dtype=F64))
    assert certified(linear, torch.zeros(2, 4, dtype=F64), torch.ones(2, dtype=F64), 0.1, "l2") is None


def _ideal_grid_min(model, x, y, tau, norm, steps=41):
    """The smallest ``y f*(x + δ)`` over a grid of the ball, ``d = 3``: in the coordinates
    ``v = Mᵀδ`` (orthogonal ``M``: the ℓ₂ ball again; ``M = I``: the cube), the grid holds every
    point of the ball and, per coordinate, the points where a feature crosses its threshold."""
    n, d = x.shape
    axis = torch.linspace(-tau, tau, steps, dtype=F64)
    c = x @ model.M
    found = torch.full((n,), math.inf, dtype=F64)
    for j in range(n):
        # the crossing points of each coordinate, just on either side, join the grid
        extra = [v for i in range(d) for th in (model.threshold, -model.threshold)
                 for v in (th - c[j, i], th - c[j, i] - 1e-9 * tau) if abs(float(v)) <= tau]
        pts = torch.cat([axis, torch.tensor(extra, dtype=F64)])
        v = torch.cartesian_prod(pts, pts, pts)
        if norm == "l2":
            v = v[v.norm(dim=1) <= tau]
        out = y[j] * model.forward(x[j] + v @ model.M.T)
        found[j] = out.min()
    return found


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_the_ideal_models_bound_is_sound_and_close_to_the_grid_minimum(norm):
    """The ideal model (§3) in ``d = 3`` with the default preset's ratio ``τ = θ``: each feature can
    switch on alone, so only the shared budget proves anything (ℓ₂: the Lagrangian bound)."""
    g = gen(7)
    M = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=F64))[0] if norm == "l2" else torch.eye(3, dtype=F64)
    model = IdealRobustModel(M, torch.tensor([1.0, -1.0, 1.0], dtype=F64), 4)  # θ = 1/4
    z = torch.where(torch.rand(40, 3, generator=g, dtype=F64) < 0.5, 0.0, 1.0) * (0.2 + torch.rand(40, 3, generator=g, dtype=F64))
    x = z @ M.T + 0.05 * torch.randn(40, 3, generator=g, dtype=F64)
    y = torch.where(model.forward(x) >= 0, 1.0, -1.0).to(F64)
    tau = model.threshold if norm == "l2" else 0.1
    bound = ideal_margin_lower_bound(model, x, y, tau, norm)
    found = _ideal_grid_min(model, x, y, tau, norm)
    assert bool((bound <= found + 1e-12).all()), float((bound - found).max())
    proven = certified(model, x, y, tau, norm)
    robust = int((found > 0).sum())
    assert robust > 5 and int(proven.sum()) >= robust - 2, (int(proven.sum()), robust)


def test_the_cascade_and_the_strength_table_skip_proven_examples_with_the_same_outcome():
    net, x, y = _problem(0.05, dtype=torch.float32, n=200, d=12, m=40)
    tau = 0.1
    proven = certified(net, x, y, tau, "l2")
    assert 0 < int(proven.sum()) < 200
    attack = ConvergedPGD("l2", steps=30, starts=("zero", "random"))
    runs = [cascade(net, x, y, tau, [attack], generators=[gen(3)], proven=p) for p in (None, proven)]
    for field in ("clean_correct", "robust_correct", "broken_by"):
        np.testing.assert_array_equal(getattr(runs[0], field), getattr(runs[1], field))
    assert bool(runs[0].robust_correct[proven.numpy()].all())
    tables = [attack_strength(net, x, y, tau, norm="l2", steps_grid=(5, 20), starts_grid=(1, 2), generator=gen(4),
                              proven=p) for p in (None, proven)]
    np.testing.assert_array_equal(*tables)


def test_the_evaluation_refuses_a_certificate_an_attack_contradicts(monkeypatch, tmp_path: Path):
    monkeypatch.setattr(final_evaluation, "certified", lambda model, x, *_: torch.ones(x.shape[0], dtype=torch.bool))
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        with pytest.raises(RuntimeError, match="certificate is wrong"):
            main(["simulate", *TINY, "--out", str(tmp_path / "run")])


def test_skipping_certified_examples_changes_no_stored_number(monkeypatch, tmp_path: Path):
    """The optimisation's switch: one small run with the survivor attacks on every survivor and
    one leaving out the certified ones (one-sided and two-sided passes); the summary prints the
    certified accuracies, which are below the attacked ones and above zero."""
    for extra in ([], ["--bias-schedule", "paper", "--adv-steps", "5"]):
        runs = []
        for skip in (False, True):
            monkeypatch.setattr(final_evaluation, "SKIP_CERTIFIED", skip)
            run = tmp_path / f"{skip}{len(extra)}"
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()) as err:
                assert main(["simulate", *TINY, *extra, "--out", str(run)]) == 0, err.getvalue()
            runs.append(run)
        assert_same_store(*runs)
        ev = S.load_run(runs[1], V.EVALUATION)
        proven = ev[V.CERTIFIED].values.astype(bool)
        survived = ev[V.ROBUST_CORRECT].values.astype(bool)
        assert not (proven & ~survived).any()
        assert proven.sum() > 0 and ev.attrs["certified_models"] == ",".join(ev.model.values)
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            assert main(["info", str(runs[1])]) == 0
        assert "certified (proven robust at the same tau, a lower bound): clean model" in out.getvalue()


def test_the_shared_preactivations_are_the_bounds_own_product(monkeypatch):
    """``certified`` computes ``x Wᵀ`` once for both bounds: block by block the same product each
    bound computes alone, so the verdicts are the same bits (here over several blocks)."""
    import purify.certificate as C

    monkeypatch.setattr(C, "CHUNK", 7)
    net64, x, y = _problem(0.05)
    net = SymmetricReLUNet(net64.W.float(), net64.b.float(), net64.sigma_rho.float())
    x = x.float()
    xw = C.preactivations(net, x)
    assert [block.shape[0] for block in xw] == [7] * 8 + [4]
    for norm, tau in (("l2", 0.1), ("linf", 0.02)):
        alone = margin_lower_bound(net, x, y.float(), tau, norm)
        assert torch.equal(margin_lower_bound(net, x, y.float(), tau, norm, xw), alone)
        error = float_error(net, x, tau, norm, torch.float32)
        assert torch.equal(float_error(net, x, tau, norm, torch.float32, xw), error)
        proven = certified(net, x, y.float(), tau, norm)
        assert torch.equal(proven, alone > error) and bool(proven.any())
