"""The shared sign convention and the dual norm (Hölder) that biases, thresholds and attacks use."""

from __future__ import annotations

import torch

from purify.attacks import Norm
from purify.data import labels
from purify.norms import sign


def test_sign_of_zero_is_plus_one_in_any_dtype():
    for dtype in (torch.float32, torch.float64):
        v = torch.tensor([-2.0, -0.0, 0.0, 1e-30, 3.0], dtype=dtype)
        out = sign(v)
        assert out.dtype == dtype
        assert out.tolist() == [-1.0, 1.0, 1.0, 1.0, 1.0]


def test_a_tie_is_a_plus_one_label():
    z = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 0.0]])
    assert labels(z, torch.tensor([1.0, -1.0])).tolist() == [1.0, 1.0, -1.0]


def test_dual_norm_is_the_largest_inner_product_over_the_unit_ball():
    g = torch.randn(50, 7, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for name in ("l2", "linf"):
        norm = Norm(name)
        best = norm.normalize(g)  # argmax of <g, v> over ||v||_p <= 1
        torch.testing.assert_close((g * best).sum(dim=1), norm.dual_norm(g))
        assert torch.allclose(norm.norm(best), torch.ones(50, dtype=torch.float64))
        other = norm.project(torch.randn(50, 7, generator=torch.Generator().manual_seed(1), dtype=torch.float64), 1.0)
        assert ((g * other).sum(dim=1) <= norm.dual_norm(g) + 1e-12).all()
