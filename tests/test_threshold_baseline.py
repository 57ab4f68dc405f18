"""The threshold baseline of the end-of-phase evaluation against a hand computation.

The baseline is the clean network with every bias raised to ``b_i = r τ ‖w_i‖₂`` (``τ = 1/√k``
at the defaults, the norm schedule's ``r‖w_i‖/√k``) and ``σ_ρ,i = 0.05 b_i``; it must be
evaluated with the same cheap attacks and random streams as every other model.
"""

from __future__ import annotations

import contextlib
import io
import math

import numpy as np
import pytest
import torch

from purify import rng
from purify import store as S
from purify.attacks import make_attack
from purify.cli import main
from purify.config import RunConfig
from purify.final_evaluation import (
    CLEAN_SLACK,
    REFINE_STEPS,
    THRESHOLD_GRID,
    format_r,
    refine_threshold,
    threshold_net,
)
from purify.learners.symmetric import SymmetricReLUNet
from purify.trainer import make_problem

TINY = [
    "--d", "32", "--k", "3", "--m", "64", "--clean-steps", "60", "--adv-steps", "20",
    "--n-test", "200", "--n-eval", "100", "--batch-size", "128", "--pgd-steps", "3",
    "--clean-snapshots", "4", "--adv-snapshots", "2", "--log-points", "10", "--quiet", "--no-analysis",
    "--eval-attack", "fast", "--seed", "3", "--preset", "boundary",  # some r keep the clean accuracy
]


@pytest.fixture(scope="module")
def run(tmp_path_factory, _one_thread):
    out = tmp_path_factory.mktemp("threshold") / "run"
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()) as err:
        code = main(["simulate", *TINY, "--out", str(out)])
    assert code == 0, err.getvalue()
    return out


def by_hand(config: RunConfig, W: torch.Tensor, r: float, norm: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-example clean and cheap-attack robust outcomes of the baseline at ``r``."""
    k = config.data.k
    b = r * W.norm(dim=1) / math.sqrt(k)  # b_i = r ||w_i|| / sqrt(k)
    net = SymmetricReLUNet(W, b, 0.05 * b)
    problem = make_problem(config)
    test = problem.sample(config.data.n_test, generator=rng.generator(config.data_seed, "test"))
    clean = (torch.where(net.forward(test.x) >= 0, 1.0, -1.0) == test.y).numpy()
    robust = clean.copy()
    ev = config.eval
    tau = ev.tau if norm == "l2" else ev.tau_linf
    for name in ev.attacks:
        attack = make_attack(name, norm, dense_direction=problem.dense_direction(), pgd_steps=ev.pgd_steps,
                             pgd_rel_step=ev.pgd_rel_step, pgd_restarts=ev.pgd_restarts)
        delta = attack(net, test.x, test.y, tau, generator=rng.generator(config.seed, f"final/{norm}/{name}"))
        robust &= (torch.where(net.forward(test.x + delta) >= 0, 1.0, -1.0) == test.y).numpy()
    return clean, robust


def test_threshold_net_is_the_rule():
    W = torch.randn(5, 7, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    net = threshold_net(W, 1.3, 0.25, "l2", 0.05)
    np.testing.assert_allclose(net.b, 1.3 * 0.25 * W.norm(dim=1))
    np.testing.assert_allclose(net.sigma_rho, 0.05 * net.b)
    linf = threshold_net(W, 1.3, 0.25, "linf", 0.05)  # dual of l-inf: ||w||_1
    np.testing.assert_allclose(linf.b, 1.3 * 0.25 * W.abs().sum(dim=1))


def test_refinement_finds_where_the_clean_accuracy_crosses_the_target():
    def clean(r):  # falls linearly through the target 0.8 at r = 1.23
        return 0.8 + 0.5 * (1.23 - r)

    grid = list(THRESHOLD_GRID)
    r = refine_threshold(clean, grid, [clean(g) for g in grid], 0.8)
    # bisection of [1.2, 1.3] into 2^steps slices: the crossing 1.23 lies in slice floor(0.3 · 2^steps)
    # (19 of 64), so the last r kept is that slice's lower end, and the next slice's is below the target
    n = 2**REFINE_STEPS
    assert r == pytest.approx(1.2 + 0.1 * math.floor(0.3 * n) / n, abs=1e-12) and clean(r + 0.1 / n) < 0.8
    assert refine_threshold(clean, grid, [clean(g) for g in grid], 0.8, steps=3) == pytest.approx(1.225, abs=1e-12)
    assert refine_threshold(clean, grid, [clean(g) for g in grid], 0.1) is None  # every r keeps the target
    assert refine_threshold(clean, grid, [clean(g) for g in grid], 1.2) is None  # none does
    # the first crossing from below counts, even where a larger r is above the target again
    bumpy = [0.9, 0.85, 0.7, 0.9] + [0.5] * (len(grid) - 4)
    calls = []
    r = refine_threshold(lambda v: calls.append(v) or 0.75, grid, bumpy, 0.8)
    assert r is None and len(calls) == REFINE_STEPS and all(0.7 < v < 0.8 for v in calls)


def test_threshold_grid_matches_a_hand_computation(run):
    config = RunConfig.from_json(S.read_attrs(run)["config_json"])
    ds = S.load_run(run, "threshold")
    assert list(THRESHOLD_GRID) == pytest.approx(np.arange(0.6, 2.05, 0.1))
    refined = ds.attrs["refined_r"]  # this run's grid crosses the clean target
    assert ds.r.values.tolist() == sorted([*THRESHOLD_GRID, refined])
    snaps = S.load_run(run, "snapshots")
    W = torch.from_numpy(snaps.W.sel(step=config.train.clean_steps).values)
    for r in (0.6, 1.3, 2.0, refined):
        for norm in ("l2", "linf"):
            clean, robust = by_hand(config, W, r, norm)
            assert float(ds.clean_accuracy.sel(r=r)) == pytest.approx(clean.mean())
            assert float(ds.robust_accuracy_fast.sel(r=r, norm=norm)) == pytest.approx(robust.mean())
    # a larger threshold buys robustness at this size (the grid is informative)
    fast = ds.robust_accuracy_fast.sel(norm="l2").values
    assert fast.max() > fast[0]


def test_selected_threshold_follows_the_rule_and_is_stored_per_example(run):
    config = RunConfig.from_json(S.read_attrs(run)["config_json"])
    ds = S.load_run(run, "threshold")
    ev = S.load_run(run, "evaluation")
    target = float(ev.clean_correct.sel(model="robust").mean()) - CLEAN_SLACK
    eligible = ds.r.values[ds.clean_accuracy.values >= target]
    assert eligible.size > 0  # the rule's main case; with none eligible it takes the best clean r
    fast = ds.robust_accuracy_fast.sel(norm="l2")
    r = float(ds.attrs["selected_r"])
    assert r in eligible and float(fast.sel(r=r)) == float(fast.sel(r=eligible).max())
    # the candidates: the best three eligible by cheap-attack accuracy
    cand = [float(v) for v in ds.attrs["candidates"].split(",")]
    assert len(cand) == min(3, eligible.size)
    assert min(fast.sel(r=cand).values) >= fast.sel(r=eligible).drop_sel(r=cand).max()
    # fast strength: the "full" cascade is the cheap one; the first candidate wins and the
    # others are skipped (their cheap accuracy cannot beat it); the selected r has every norm
    full = ds.robust_accuracy
    assert cand[0] == r and not np.isnan(full.sel(r=r).values).any()
    assert np.isnan(full.drop_sel(r=[r]).values).all()
    np.testing.assert_allclose(full.sel(r=r).values, ds.robust_accuracy_fast.sel(r=r).values)
    # the per-example results of model "threshold" are the hand-computed ones at r
    W = torch.from_numpy(S.load_run(run, "snapshots").W.sel(step=config.train.clean_steps).values)
    for norm in ("l2", "linf"):
        clean, robust = by_hand(config, W, r, norm)
        np.testing.assert_array_equal(ev.clean_correct.sel(model="threshold").values, clean)
        np.testing.assert_array_equal(ev.robust_correct.sel(model="threshold", norm=norm).values, robust)


def test_a_refined_r_is_printed_with_three_decimals_and_the_grid_with_one():
    assert [format_r(r) for r in THRESHOLD_GRID] == [f"{r:.1f}" for r in THRESHOLD_GRID]
    assert format_r(0.8 + 0.1 * 27 / 64) == "0.842"  # a bisection point between 0.8 and 0.9
    assert format_r(1.0 + 0.1 / 64) == "1.002"  # one step off the grid is not rounded onto it
