"""Tests of purify.schedules: the norm and paper bias schedules and the radius floor of
adversarial training."""

from __future__ import annotations

import math

import pytest
import torch

from purify.config import DataConfig, NetConfig
from purify.learners.symmetric import SymmetricReLUNet
from purify.schedules import BiasSchedule, radius_floor

F64 = torch.float64


def schedule(bias_schedule: str, *, d=100, k=9, steps=1000, lr=0.5) -> BiasSchedule:
    net = NetConfig(bias_schedule=bias_schedule, r_start=1.5, r_end=0.8).resolve(DataConfig(d=d, k=k))
    return BiasSchedule(net, d=d, k=k, steps=steps, lr=lr)


def test_norm_schedule_ties_each_bias_to_its_neuron_norm():
    s = schedule("norm")
    g = torch.Generator().manual_seed(0)
    W = torch.randn(50, 100, generator=g, dtype=F64) * torch.rand(50, 1, generator=g, dtype=F64)
    W[0] = 0.0  # a dead neuron keeps the floor b⁰
    for t, r in ((0, 1.5), (350, 1.15), (700, 0.8), (999, 0.8)):  # linear over 70 % of the steps
        b, sigma = s(W, t)
        expected = (r / 3.0) * W.norm(dim=1)
        expected[0] = s.b0
        torch.testing.assert_close(b, expected.clamp_min(s.b0), rtol=1e-12, atol=0)
        torch.testing.assert_close(sigma, 0.05 * b, rtol=1e-12, atol=0)
    assert s.b0 == pytest.approx(0.01 * math.sqrt(math.log(100)))


def test_paper_schedule_grows_a_shared_bias_to_its_cap():
    s = schedule("paper", d=100, k=9, lr=0.5)
    W = torch.randn(7, 100, dtype=F64)
    b, sigma = s(W, 10)
    assert torch.equal(b, torch.full((7,), s.b0 + 10 * 0.5 * 1.0 / 100, dtype=F64))
    torch.testing.assert_close(sigma, b / math.sqrt(math.log(100)))
    b, sigma = s(W, 10**6)
    assert torch.equal(b, torch.full((7,), 9**-0.5001, dtype=F64))
    torch.testing.assert_close(sigma, b / math.log(100))  # the smaller smoothing once grown


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_radius_floor_keeps_a_silent_neuron_silent_under_every_perturbation_of_the_radius(norm):
    g = torch.Generator().manual_seed(1)
    m, d, tau = 30, 40, 0.3
    W = torch.randn(m, d, generator=g, dtype=F64)
    b = torch.rand(m, generator=g, dtype=F64) * 0.01
    b[:3] = 100.0  # already above the floor: unchanged
    sigma = 0.05 * b
    raised, s_raised = radius_floor(W, b, sigma, tau, norm)
    q = 2 if norm == "l2" else 1
    torch.testing.assert_close(raised, torch.maximum(b, tau * W.norm(p=q, dim=1)), rtol=1e-12, atol=0)
    assert torch.equal(raised[:3], b[:3])
    torch.testing.assert_close(s_raised / raised, sigma / b, rtol=1e-12, atol=0)
    # The worst perturbation for neuron i (Hölder's equality case) on an input orthogonal to
    # w_i moves its pre-activation by exactly the floor: the plain ReLU stays at 0.
    worst = tau * (W / W.norm(dim=1, keepdim=True) if norm == "l2" else W.sign())
    assert bool((worst.norm(p=2 if norm == "l2" else math.inf, dim=1) <= tau * (1 + 1e-12)).all())
    net = SymmetricReLUNet(W, raised, torch.zeros_like(raised))
    u = (worst * W).sum(dim=1)  # <w_i, δ_i>
    assert bool((u - net.b <= 1e-12).all())
    # with the other dual norm the floor is too low for ℓ∞ (‖w‖₂ < ‖w‖₁): the test can fail
    if norm == "linf":
        low, _ = radius_floor(W, b, sigma, tau, "l2")
        assert bool((u[3:] - low[3:] > 0).all())
