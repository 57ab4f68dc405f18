"""The logistic loss and example chunking shared by the comparison learners.

Every comparison learner (lazy, NTK, linear, random) trains on the mean logistic loss
``log(1 + e^{−y f})`` (Wang et al. 2022 §5.1; Allen-Zhu & Li §4) and forms ``(n, m)``
pre-activation matrices; :func:`example_chunks` bounds those so ``m = 1e5`` neurons at
``d = 784`` fit in memory whatever the batch size.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor

# Elements of one (n_chunk, m) buffer: 2^23 float32 values are 32 MB, and a learner holds a
# few such buffers at once.  Tests shrink it to exercise the chunked path.
CHUNK_ELEMENTS = 1 << 23
# Row blocks for passes over the weights themselves (deviation, projection): small blocks stay
# in the allocator's reused memory instead of page-faulting fresh buffers (~2x faster at m = 1e5).
ROW_BLOCK_ELEMENTS = 1 << 18


def example_chunks(n: int, width: int, budget: int | None = None) -> Iterator[slice]:
    """Slices of ``range(n)`` whose ``(len, width)`` buffers have at most ``budget`` elements."""
    budget = CHUNK_ELEMENTS if budget is None else budget
    rows = max(1, budget // max(1, width))
    for start in range(0, n, rows):
        yield slice(start, min(n, start + rows))


def map_chunks(x: Tensor, width: int, fn: Callable[[Tensor], tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
    """``fn`` on each chunk of ``x (n, d)`` (:func:`example_chunks` for a ``width``-wide learner),
    each of its two results joined along the examples."""
    firsts, seconds = [], []
    for sl in example_chunks(x.shape[0], width):
        first, second = fn(x[sl])
        firsts.append(first)
        seconds.append(second)
    return torch.cat(firsts), torch.cat(seconds)


def accumulate_product(acc: Tensor | None, first: bool, a: Tensor, b: Tensor) -> Tensor:
    """``acc = a @ b`` on the first chunk (into ``acc`` when given), else ``acc += a @ b``.

    Writing into a caller's buffer spares a fresh ``(m, d)`` allocation per step, whose page
    faults cost as much as the product itself at ``m = 1e5``, ``d = 784``.
    """
    if first:
        return a @ b if acc is None else torch.mm(a, b, out=acc)
    return acc.addmm_(a, b)


def chunked_logistic_pass(
    x: Tensor,
    y: Tensor,
    weights: Tensor,
    chunk_pass: Callable[[Tensor], tuple[Tensor, Callable[[Tensor], Tensor]]],
    out: tuple[Tensor] | None = None,
) -> tuple[Tensor, tuple[Tensor], Tensor]:
    """Mean logistic loss, ``(∇_W L,)`` and ``f(x)`` of a learner whose output depends on its one
    trainable ``(m, d)`` matrix ``W`` only through ``W x``, over the chunks of :func:`example_chunks`.

    Each chunk ``x_c`` adds its share of :func:`logistic_loss` to the loss and ``C_cᵀ x_c`` to the
    gradient, where the learner's coefficients ``C_c (n_c, m)`` are ``∂L/∂(W x_j)_s`` (chain rule:
    ``∂L/∂f_j · ∂f_j/∂(W x_j)_s``).

    Parameters
    ----------
    x : (n, d) inputs.
    y : (n,) labels in ``{±1}``.
    weights : (m, d) the trainable matrix ``W`` (its width sizes the chunks; an empty batch's
        zero gradient takes its shape).
    chunk_pass : maps a chunk ``x_c (n_c, d)`` to its outputs ``f(x_c) (n_c,)`` and a function
        taking ``∂L/∂f (n_c,)`` to the coefficients ``C_c (n_c, m)``.
    out : a ``((m, d),)`` buffer the gradient is written into (and returned), when given.

    Returns
    -------
    loss : 0-d tensor.
    grads : ``((m, d),)``.
    outputs : (n,) ``f(x)``.
    """
    n = x.shape[0]
    loss = x.new_zeros(())
    grad = None if out is None else out[0]
    outs = []
    for i, sl in enumerate(example_chunks(n, weights.shape[0])):
        f, coefficients = chunk_pass(x[sl])
        part, dloss = logistic_loss(f, y[sl], n)
        loss = loss + part
        grad = accumulate_product(grad, i == 0, coefficients(dloss).T, x[sl])
        outs.append(f)
    if not outs:
        grad = torch.zeros_like(weights) if grad is None else grad.zero_()
        return loss, (grad,), x.new_zeros(0)
    assert grad is not None
    return loss, (grad,), torch.cat(outs)


def logistic_loss(out: Tensor, y: Tensor, n: int | None = None) -> tuple[Tensor, Tensor]:
    """Mean logistic loss over a batch of ``n`` examples and its derivative in each ``f(x_j)``.

    ``L = (1/n) Σ_j log(1 + e^{−y_j f_j})``, ``∂L/∂f_j = −y_j σ(−y_j f_j) / n``; softplus keeps
    both finite for large margins of either sign.  When ``out`` is one chunk of a larger batch,
    pass the batch size as ``n``: the chunks' losses and derivatives then add up to the batch's.

    Parameters
    ----------
    out : (n_chunk,) outputs ``f(x_j)``.
    y : (n_chunk,) labels in ``{±1}``.
    n : batch size; ``len(out)`` when omitted.

    Returns
    -------
    loss : 0-d tensor, this chunk's share of the mean loss.
    dloss : (n_chunk,) ``∂L/∂f_j``.
    """
    n = out.shape[0] if n is None else n
    margin = y * out
    return F.softplus(-margin).sum() / n, -y * torch.sigmoid(-margin) / n
