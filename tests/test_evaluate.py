"""Tests of purify.evaluate: closed-form robust accuracy of linear and ideal models, invariants."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from fixtures import LinearModel, gen

from purify.attacks import FGM, PGD, DenseAttack, NoiseAttack
from purify.data import SparseCodingProblem, make_dictionary, make_teacher
from purify.evaluate import (
    accuracy,
    cascade,
    evaluate,
    paired_difference,
    robust_correct,
    standard_error,
)
from purify.learners.ideal import IdealRobustModel

F64 = torch.float64


def linear_setup(n=500, d=10, seed=0, flip=0.0):
    """x ~ N(0, I); labels from a teacher v close to w (so clean accuracy is below 1)."""
    g = gen(seed)
    w = torch.randn(d, generator=g, dtype=F64)
    v = w + 0.5 * torch.randn(d, generator=g, dtype=F64) - flip * w
    x = torch.randn(n, d, generator=g, dtype=F64)
    y = torch.where(x @ v >= 0, 1.0, -1.0).to(F64)
    return LinearModel(w), x, y, w


def counts(fractions, n: int) -> np.ndarray:
    """Number of examples behind accuracies (stored as float32 means): compare these exactly."""
    return np.rint(np.asarray(fractions, dtype=np.float64) * n).astype(int)


TAUS = {"l2": [0.05, 0.2, 0.5, 1.0, 2.0], "linf": [0.01, 0.05, 0.1, 0.3, 0.6]}


def all_attacks(d: int, seed: int = 0):
    direction = torch.randn(d, generator=gen(seed + 50), dtype=F64)
    return {
        norm: {
            "fgm": FGM(norm),
            "pgd": PGD(norm, steps=5),
            "dense": DenseAttack(norm, direction),
            "noise": NoiseAttack(norm),
        }
        for norm in ("l2", "linf")
    }


@pytest.fixture(scope="module")
def linear_eval():
    model, x, y, w = linear_setup()
    ev = evaluate(model, x, y, attacks=all_attacks(x.shape[1]), taus=TAUS, generator=gen(1))
    return model, x, y, w, ev


def test_clean_accuracy_matches_sign_agreement(linear_eval):
    model, x, y, w, ev = linear_eval
    expected = float(((y * (x @ w)) > 0).double().mean())
    assert 0.6 < expected < 0.99  # a non-trivial fixture
    n = len(y)
    assert counts(ev.clean, n) == counts(expected, n) == counts(accuracy(model, x, y), n)


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_fgm_robust_accuracy_on_linear_model_is_the_closed_form(linear_eval, norm):
    # FGM lowers the margin by exactly τ‖w‖_q, so robust ⇔ y<w,x> > τ‖w‖_q
    model, x, y, w, ev = linear_eval
    q = float(w.norm() if norm == "l2" else w.abs().sum())
    margin = y * (x @ w)
    expected = np.array([float((margin > tau * q).double().mean()) for tau in TAUS[norm]])
    fgm = list(all_attacks(10)[norm]).index("fgm")
    n = len(y)
    np.testing.assert_array_equal(counts(ev.robust[norm][fgm], n), counts(expected, n))
    assert expected[0] > expected[-1]  # the radii are informative
    # FGM is the exact worst case for a linear model, so no attacker does better than it
    np.testing.assert_array_equal(counts(ev.strongest[norm], n), counts(expected, n))


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_evaluation_shapes_and_orderings(linear_eval, norm):
    model, x, y, w, ev = linear_eval
    r = ev.robust[norm]
    assert r.shape == (4, len(TAUS[norm])) and ev.strongest[norm].shape == (len(TAUS[norm]),)
    assert bool((r <= ev.clean + 1e-12).all())
    assert bool((ev.strongest[norm] <= r.min(axis=0) + 1e-12).all())
    fgm = r[0]
    assert bool((np.diff(fgm) <= 0).all())  # larger radius, weaker or equal robustness


def test_robust_accuracy_never_exceeds_clean_even_if_an_attack_would_fix_errors():
    # labels mostly disagree with the model (clean ≈ 0.2); large random noise makes the
    # perturbed prediction a coin flip, which would score ≈ 0.5 without the clean mask
    model, x, y, w = linear_setup(n=800, seed=3, flip=2.0)
    attacks = {"l2": {"noise": NoiseAttack("l2")}}
    ev = evaluate(model, x, y, attacks=attacks, taus={"l2": [100.0]}, generator=gen(4))
    unmasked = float(robust_correct(model, x, y, NoiseAttack("l2"), 100.0, generator=gen(4)).double().mean())
    assert ev.clean < 0.35 and unmasked > ev.clean + 0.1
    assert ev.robust["l2"][0, 0] <= ev.clean


def test_deterministic_attacks_do_not_depend_on_chunking():
    model, x, y, w = linear_setup(n=103, seed=5)
    atk = {
        k: {n: a for n, a in v.items() if n in ("fgm", "dense", "pgd")} for k, v in all_attacks(10).items()
    }
    for a in atk.values():  # PGD without random start is deterministic too
        a["pgd"] = PGD("l2" if a is atk["l2"] else "linf", steps=3, random_start=False)
    big = evaluate(model, x, y, attacks=atk, taus=TAUS, generator=gen(0))
    small = evaluate(model, x, y, attacks=atk, taus=TAUS, generator=gen(0), chunk=10)
    assert big.clean == small.clean
    for norm in TAUS:
        np.testing.assert_array_equal(big.robust[norm], small.robust[norm])
        np.testing.assert_array_equal(big.strongest[norm], small.strongest[norm])


def test_zero_output_counts_as_plus_one_everywhere():
    # f ≡ 0: sign(0) = +1, so clean and robust accuracy (FGM is zeroed on a flat model; the
    # dense attack keeps f = 0) are both the fraction of +1 labels
    d, n = 6, 40
    model = LinearModel(torch.zeros(d, dtype=F64))
    x = torch.randn(n, d, generator=gen(6), dtype=F64)
    y = torch.where(torch.arange(n) % 4 == 0, -1.0, 1.0).to(F64)
    attacks = {"l2": {"fgm": FGM("l2"), "dense": DenseAttack("l2", torch.ones(d, dtype=F64))}}
    ev = evaluate(model, x, y, attacks=attacks, taus={"l2": [0.5]}, generator=gen(0))
    assert accuracy(model, x, y) == 0.75
    assert ev.clean == 0.75
    np.testing.assert_array_equal(ev.robust["l2"], [[0.75], [0.75]])
    assert ev.strongest["l2"][0] == 0.75


def test_ideal_model_end_to_end_closed_forms():
    # M = I, k = 4, no noise: f*(x) = s := <w*, z> exactly (code values are dyadic), active
    # set A = supp z, threshold 1/4 and every |z_i| ≥ 1/2.  Radii stay below the activity
    # switching margin 1/4 per coordinate, so the perturbed output is linear on A:
    #   dense  δ = −τ y w*/√D      → f*(x+δ) = s − τ y |A|/√D
    #   FGM    δ = −τ y w*_A/√|A|  → f*(x+δ) = s − τ y √|A|   (0 if A = ∅: flat, δ = 0)
    d, k, n = 20, 4, 600
    M = make_dictionary("identity", d, d, generator=gen(0), dtype=F64)
    w_star = make_teacher(d, generator=gen(1), dtype=F64)
    p = SparseCodingProblem(M, w_star, ((1.0, 1 / d), (0.5, k / d)), 0.0, 0.0, 0.0)
    b = p.sample(n, generator=gen(2))
    model = IdealRobustModel(M, w_star, k)
    s = b.z @ w_star
    n_act = (b.z != 0).sum(dim=1).to(F64)
    taus = [0.05, 0.12, 0.2]
    attacks = {"l2": {"dense": DenseAttack("l2", p.dense_direction()), "fgm": FGM("l2")}}
    ev = evaluate(model, b.x, b.y, attacks=attacks, taus={"l2": taus}, generator=gen(3))
    assert bool((s == 0).any()) and ev.clean == 1.0  # ties are labelled +1 and predicted +1

    def frac(out):
        return float((torch.where(out >= 0, 1.0, -1.0) == b.y).double().mean())

    dense = [frac(s - t * b.y * n_act / math.sqrt(d)) for t in taus]
    fgm = [frac(s - t * b.y * n_act.sqrt()) for t in taus]
    np.testing.assert_array_equal(counts(ev.robust["l2"][0], n), counts(dense, n))
    np.testing.assert_array_equal(counts(ev.robust["l2"][1], n), counts(fgm, n))
    assert fgm[-1] < dense[-1] < 1.0  # the model-aware attack is the stronger one here


# --------------------------------------------------------------------------------------
# The end-of-phase cascade, standard errors, paired differences
# --------------------------------------------------------------------------------------


def small_symmetric_net(d=12, m=24, seed=11):
    from purify.learners.symmetric import SymmetricReLUNet

    g = gen(seed)
    W = torch.randn(m, d, generator=g, dtype=F64) / math.sqrt(d)
    b = 0.3 * W.norm(dim=1)
    return SymmetricReLUNet(W, b, 0.05 * b)


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_cascade_is_per_example_no_better_than_any_of_its_attacks(norm):
    net = small_symmetric_net()
    g = gen(12)
    x = torch.randn(300, 12, generator=g, dtype=F64)
    y = torch.where(torch.randn(300, generator=g, dtype=F64) >= 0, 1.0, -1.0).to(F64)
    y = torch.where(torch.rand(300, generator=g, dtype=F64) < 0.8, torch.sign(net.forward(x) + 1e-12), y)
    tau = 0.6 if norm == "l2" else 0.2
    attacks = [FGM(norm), PGD(norm, steps=5), DenseAttack(norm, torch.ones(12, dtype=F64)), NoiseAttack(norm)]
    res = cascade(net, x, y, tau, attacks, generators=[gen(20 + a) for a in range(4)], attack_all=2)
    alone = [robust_correct(net, x, y, a, tau, generator=gen(20 + i)).numpy() & res.clean_correct
             for i, a in enumerate(attacks)]
    # the first two ran on every example (one chunk) with the same draws: their outcomes are exact
    np.testing.assert_array_equal(res.each_correct, np.stack(alone[:2]))
    for ok in alone:  # per example: robust in the cascade ⇒ robust under each attack alone
        # (FGM and dense are deterministic; PGD ran on all with the same draws, and noise on the
        # survivors draws for every row, so a survivor gets the draw it gets alone)
        assert not (res.robust_correct & ~ok).any()
    assert (res.robust_correct == (res.clean_correct & (res.broken_by == -1))).all()
    broken = res.broken_by[res.broken_by >= 0]
    assert broken.size and broken.max() < len(attacks) and res.n_attacks == len(attacks)
    assert 0 < res.robust_correct.mean() < res.clean_correct.mean()  # informative fixture
    # deterministic attacks: the example each one breaks first is where it breaks, not earlier
    first = res.broken_by == 0
    np.testing.assert_array_equal(first, res.clean_correct & ~alone[0])
    # continuing a prior cascade gives the concatenated cascade
    head = cascade(net, x, y, tau, attacks[:2], generators=[gen(20), gen(21)], attack_all=2)
    tail = cascade(net, x, y, tau, attacks[2:], generators=[gen(22), gen(23)], prior=head)
    np.testing.assert_array_equal(tail.broken_by, res.broken_by)
    np.testing.assert_array_equal(tail.robust_correct, res.robust_correct)


def test_cascade_paired_draws_do_not_depend_on_the_model():
    # the noise attack on every example (attack_all): the same generator seed gives the same
    # perturbation per example for two models, so outcomes differ only through the models
    model, x, y, w = linear_setup(n=200, seed=8)
    other = LinearModel(w + 0.3 * torch.randn(w.shape, generator=gen(9), dtype=F64))
    tau = 3.0
    a = cascade(model, x, y, tau, [NoiseAttack("l2")], generators=[gen(5)], attack_all=1, chunk=64)
    b = cascade(other, x, y, tau, [NoiseAttack("l2")], generators=[gen(5)], attack_all=1, chunk=64)
    delta = NoiseAttack("l2")(model, x[:64], y[:64], tau, generator=gen(5))  # the first chunk's draw
    for res, f in ((a, model), (b, other)):
        expected = (torch.where(f.forward(x[:64] + delta) >= 0, 1.0, -1.0) == y[:64]).numpy()
        np.testing.assert_array_equal(res.each_correct[0, :64], expected & res.clean_correct[:64])


def test_standard_error_and_paired_difference_against_numpy():
    a = np.array([1, 0, 1, 1, 0, 1, 1, 1, 0, 1], dtype=float)
    b = np.array([1, 0, 0, 1, 0, 0, 1, 0, 0, 1], dtype=float)
    assert standard_error(a) == pytest.approx(np.std(a, ddof=1) / np.sqrt(10))
    p = a.mean()
    assert standard_error(a) == pytest.approx(math.sqrt(p * (1 - p) / 9))  # the binomial form
    d = paired_difference(a, b)
    assert d["value"] == pytest.approx(0.3)
    assert d["se"] == pytest.approx(np.std(a - b, ddof=1) / np.sqrt(10))
    # pairing helps when the models fail together: smaller than the unpaired SE
    assert d["se"] < math.sqrt(standard_error(a) ** 2 + standard_error(b) ** 2)
    assert paired_difference(a, a) == {"value": 0.0, "se": 0.0}
    assert math.isnan(standard_error(np.array([1.0])))
    with pytest.raises(ValueError):
        paired_difference(a, b[:5])


def test_survivor_attacks_give_a_row_the_same_draws_whichever_rows_survive():
    """Pairing through the survivors: ConvergedPGD draws its random starts for every row of a
    masked call, so an example's outcome does not depend on which other examples survived."""
    from dataclasses import replace

    from purify.attacks import ConvergedPGD

    net = small_symmetric_net(seed=13)
    g = gen(14)
    x = torch.randn(200, 12, generator=g, dtype=F64)
    y = torch.where(net.forward(x) >= 0, 1.0, -1.0).to(F64)
    cheap = cascade(net, x, y, 0.5, [NoiseAttack("l2")], generators=[gen(0)], attack_all=1, chunk=64)
    drop = np.zeros(200, dtype=bool)
    drop[::3] = True  # another model would have lost these to the cheap attacks
    fewer = replace(cheap, robust_correct=cheap.robust_correct & ~drop,
                    broken_by=np.where(cheap.robust_correct & drop, 0, cheap.broken_by))
    attack = ConvergedPGD("l2", steps=8, starts=("random", "random"))
    a = cascade(net, x, y, 0.5, [attack], generators=[gen(1)], prior=cheap, chunk=64)
    b = cascade(net, x, y, 0.5, [attack], generators=[gen(1)], prior=fewer, chunk=64)
    both = fewer.robust_correct
    assert both.sum() > 20 and (a.robust_correct[both] != cheap.robust_correct[both]).any()  # informative
    np.testing.assert_array_equal(a.robust_correct[both], b.robust_correct[both])


class _Counting:
    """A model that counts the rows it is asked to evaluate (forward or with the gradient)."""

    def __init__(self, model) -> None:
        self.model, self.rows = model, 0

    def forward(self, x):
        self.rows += x.shape[0]
        return self.model.forward(x)

    __call__ = forward

    def forward_and_input_grad(self, x):
        self.rows += x.shape[0]
        return self.model.forward_and_input_grad(x)


def _paired_attacks(norm: str, d: int):
    from purify.attacks import ConvergedPGD

    direction = torch.randn(d, generator=gen(40), dtype=F64)
    return [FGM(norm), PGD(norm, steps=4, restarts=2), PGD(norm, steps=3, random_start=False),
            DenseAttack(norm, direction), NoiseAttack(norm),
            ConvergedPGD(norm, steps=5, starts=("zero", "random", "dense"), dense_direction=direction)]


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_masked_runs_give_every_active_row_what_the_full_run_gives(norm):
    """``masks_paired``: an active row gets the bits of the unmasked call (its draws are drawn
    for every row), an inactive one zero, and the stream moves on as far either way."""
    from purify.structured_attacks import Shrink, Transfer

    net = small_symmetric_net(seed=21)
    g = gen(22)
    x = torch.randn(90, 12, generator=g, dtype=F64)
    y = torch.where(torch.randn(90, generator=g, dtype=F64) >= 0, 1.0, -1.0).to(F64)
    active = torch.rand(90, generator=g, dtype=F64) < 0.6
    tau = 0.6 if norm == "l2" else 0.2
    for attack in _paired_attacks(norm, 12):
        assert attack.masks_paired
        ga, gb = gen(23), gen(23)
        full = attack(net, x, y, tau, generator=ga)
        masked = attack(net, x, y, tau, generator=gb, active=active)
        assert full.abs().sum() > 0
        assert torch.equal(masked[active], full[active]), type(attack).__name__
        assert not masked[~active].any()
        assert torch.equal(ga.get_state(), gb.get_state()), type(attack).__name__
    assert not Shrink.masks_paired  # its masked run draws for the subset alone
    assert Transfer(norm, net, PGD(norm)).masks_paired
    assert not Transfer(norm, net, Shrink(norm, torch.eye(12, dtype=F64), torch.ones(12, dtype=F64))).masks_paired


def test_attacks_on_every_example_skip_those_misclassified_clean(monkeypatch):
    """The cascade's attacks on every example and the per-step evaluation leave out the
    examples the model gets wrong clean (their outcome is fixed) when the attack's masked run
    keeps every row's draws: the same results, fewer rows evaluated."""
    from purify.attacks import base

    net = small_symmetric_net(seed=31)
    g = gen(32)
    x = torch.randn(160, 12, generator=g, dtype=F64)
    y = torch.where(torch.randn(160, generator=g, dtype=F64) >= 0, 1.0, -1.0).to(F64)
    y = torch.where(torch.rand(160, generator=g, dtype=F64) < 0.7, torch.sign(net.forward(x) + 1e-12), y)
    attacks = _paired_attacks("l2", 12)

    def run():
        counted = _Counting(net)
        res = cascade(counted, x, y, 0.6, attacks, generators=[gen(50 + a) for a in range(len(attacks))],
                      attack_all=4, chunk=64)
        counted_eval = _Counting(net)
        ev = evaluate(counted_eval, x, y, attacks={"l2": dict(zip("abcdef", attacks, strict=True))},
                      taus={"l2": [0.3, 0.6]}, generator=gen(60), chunk=64)
        return res, counted.rows, ev, counted_eval.rows

    res, rows, ev, rows_eval = run()
    wrong = int((~res.clean_correct).sum())
    assert 20 < wrong < 140  # informative: some of each
    for cls in {type(a) for a in attacks}:
        monkeypatch.setattr(cls, "masks_paired", False)
    old, old_rows, old_ev, old_rows_eval = run()
    for field in ("clean_correct", "robust_correct", "broken_by", "each_correct"):
        np.testing.assert_array_equal(getattr(res, field), getattr(old, field))
    assert ev.clean == old_ev.clean
    np.testing.assert_array_equal(ev.robust["l2"], old_ev.robust["l2"])
    np.testing.assert_array_equal(ev.strongest["l2"], old_ev.strongest["l2"])
    assert rows < old_rows and rows_eval < old_rows_eval
    assert base.Attack.masks_paired is False
