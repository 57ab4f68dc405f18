"""Small models with closed forms, shared by the attack and evaluation tests."""

from __future__ import annotations

import torch


def gen(seed: int) -> torch.Generator:
    """A CPU generator seeded with ``seed``."""
    g = torch.Generator()
    g.manual_seed(seed)
    return g


class LinearModel:
    """f(x) = <w, x>; the steepest-descent attack on it has a closed form."""

    def __init__(self, w: torch.Tensor) -> None:
        self.w = w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.w

    __call__ = forward

    def forward_and_input_grad(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x @ self.w, self.w.expand_as(x)
