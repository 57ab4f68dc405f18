"""Learners: every model purify attacks, evaluates or analyses speaks :class:`Learner`."""

from purify.learners.base import Learner
from purify.learners.ideal import IdealRobustModel
from purify.learners.lazy import LazyReLUNet, LinearizedLazyNet
from purify.learners.linear import LinearModel
from purify.learners.ntk import NTKModel
from purify.learners.random_net import RandomNet
from purify.learners.symmetric import SymmetricReLUNet

__all__ = [
    "IdealRobustModel",
    "LazyReLUNet",
    "Learner",
    "LinearModel",
    "LinearizedLazyNet",
    "NTKModel",
    "RandomNet",
    "SymmetricReLUNet",
]
