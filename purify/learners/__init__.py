"""Learners: every model purify attacks, evaluates or analyses speaks :class:`Learner`."""

from purify.learners.base import Learner
from purify.learners.symmetric import SymmetricReLUNet

__all__ = ["Learner", "SymmetricReLUNet"]
