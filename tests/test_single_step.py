"""The single-gradient-step search (Bubeck et al. 2021 §4; Wang et al. 2022 §5.1)."""

from __future__ import annotations

import math

import pytest
import torch
from fixtures import LinearModel, gen

from purify.attacks import single_step
from purify.learners import SymmetricReLUNet


def test_linear_model_smallest_eta_is_the_closed_form():
    # f(x + η∇f) = f(x) + η‖w‖², so the sign flips exactly at η = −f(x)/‖w‖².
    g = gen(0)
    d, n = 30, 200
    w = torch.randn(d, generator=g, dtype=torch.float64)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    res = single_step(LinearModel(w), x, eta_max=50.0)
    f = x @ w
    expected = -f / w.dot(w)
    assert res.flipped.all()
    torch.testing.assert_close(res.eta, expected, rtol=1e-6, atol=1e-12)
    assert (torch.sign(res.eta) == -torch.sign(f)).all()
    torch.testing.assert_close(res.grad_norm, torch.full((n,), float(w.norm()), dtype=torch.float64))
    torch.testing.assert_close(res.delta_norm, f.abs() / w.norm(), rtol=1e-6, atol=1e-12)
    # The η found flips the sign; 1% less does not: it is the smallest.
    assert (torch.sign((x + res.eta[:, None] * w) @ w) != torch.sign(f)).all()
    assert (torch.sign((x + 0.99 * res.eta[:, None] * w) @ w) == torch.sign(f)).all()


def test_examples_out_of_reach_are_reported_unflipped_with_nan():
    w = torch.tensor([1.0, 0.0], dtype=torch.float64)
    x = torch.tensor([[0.5, 0.0], [100.0, 1.0]], dtype=torch.float64)
    res = single_step(LinearModel(w), x, eta_max=10.0)
    assert res.flipped.tolist() == [True, False]
    assert math.isclose(float(res.eta[0]), -0.5, rel_tol=1e-6)
    assert math.isnan(float(res.eta[1])) and math.isnan(float(res.delta_norm[1]))


def test_smallest_eta_on_a_relu_network_is_a_first_flip():
    """On a nonlinear net the answer flips, and no grid-scale smaller step along the ray does."""
    g = gen(1)
    d, m, n = 20, 40, 64
    W = torch.randn(m, d, generator=g, dtype=torch.float64) / math.sqrt(d)
    net = SymmetricReLUNet(W, torch.full((m,), 0.05, dtype=torch.float64), torch.full((m,), 0.01, dtype=torch.float64))
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    res = single_step(net, x, eta_max=20.0)
    assert res.flipped.float().mean() > 0.5
    out, grad = net.forward_and_input_grad(x)
    for j in torch.nonzero(res.flipped).flatten().tolist():
        eta = float(res.eta[j])
        s = math.copysign(1.0, float(out[j])) if float(out[j]) != 0 else 1.0
        after = float(net.forward(x[j : j + 1] + eta * grad[j : j + 1]))
        assert (after >= 0) != (s > 0)
        fractions = torch.linspace(0.0, 0.999, 200, dtype=torch.float64)
        path = net.forward(x[j] + fractions[:, None] * eta * grad[j])
        assert ((path >= 0) == (s > 0)).all(), f"example {j} flips before the reported eta"


@pytest.mark.parametrize("bad", [dict(eta_max=0.0), dict(eta_max=1.0, eta_min=2.0)])
def test_bad_search_limits_raise(bad):
    with pytest.raises(ValueError, match="eta"):
        single_step(LinearModel(torch.ones(2)), torch.ones(1, 2), **bad)
