"""The sign convention every stage shares.

Labels are ``y = sign(<w*, z>)`` (Allen-Zhu & Li, §2) and a scalar-output model predicts
``sign f(x)``; both take ``sign(0) = +1``, so a tie is a ``+1`` label and a zero output a ``+1``
prediction.  Data, learners, attacks, evaluation and analyses all use :func:`sign` for it.
(The ``ℓ_p`` geometry, dual norms included, is :class:`purify.attacks.Norm`.)
"""

from __future__ import annotations

import torch
from torch import Tensor


def sign(v: Tensor) -> Tensor:
    """Elementwise ``sign(v)`` in ``{−1, +1}`` with ``sign(0) = +1``; same shape and dtype as ``v``."""
    return torch.where(v >= 0, 1.0, -1.0).to(v.dtype)
