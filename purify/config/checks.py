"""Validation helpers of the configs: :class:`ConfigError` and the range checks every field uses.

Each check raises a one-line :class:`ConfigError` naming the field, the value and what is
allowed; the limits keep every value usable in float32 arithmetic.
"""

from __future__ import annotations

import math
from typing import Any


class ConfigError(ValueError):
    """An invalid configuration value; the message is one line fit to show a user.

    ``name``, ``value`` and ``allowed`` are the parts of the message when one field is at fault.
    """

    def __init__(self, message: str, name: str | None = None, value: Any = None,
                 allowed: str | None = None) -> None:
        super().__init__(message)
        self.name, self.value, self.allowed = name, value, allowed


#: Largest magnitude of a real option: runs compute in float32 and square these values (norms,
#: losses, Gaussian noise), so anything above √(float32 max) ≈ 1.8e19 overflows to inf.
LARGEST_REAL = 1.8e19

#: Largest size or step count: the timeline places steps with float64 arithmetic, exact up to
#: 2^53 (memory bounds sizes long before that: see `purify.resources`).
LARGEST_COUNT = 2**53


def check(ok: bool, name: str, value: Any, allowed: str) -> None:
    """Raise ``ConfigError("invalid NAME=VALUE: ALLOWED")`` unless ``ok``."""
    if not ok:
        raise ConfigError(f"invalid {name}={value!r}: {allowed}", name, value, allowed)


#: Largest float32: the bound of reals that only scale other values (step sizes).
FLOAT32_MAX = 3.4028234663852886e38


def positive(name: str, value: float | int | None, largest: float = LARGEST_REAL) -> None:
    if value is not None:
        check(finite(value) and value > 0, name, value, "must be > 0")
        check(value <= largest, name, value, TOO_LARGE if largest == LARGEST_REAL else
              f"must be at most {largest:.3g} (the largest float32)")


def nonnegative(name: str, value: float | int | None) -> None:
    if value is not None:
        check(finite(value) and value >= 0, name, value, "must be >= 0")
        check(value <= LARGEST_REAL, name, value, TOO_LARGE)


TOO_LARGE = f"must be at most {LARGEST_REAL:.2g} (runs compute in float32, where its square overflows)"


def count(name: str, value: Any, low: int) -> None:
    """An integer option in ``[low, 2^53]``."""
    check(is_int(value) and low <= value <= LARGEST_COUNT, name, value,
          f"must be an integer in [{low}, 2^53]")


def finite(value: float | int) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def is_int(value: Any) -> bool:
    """An integer, but not a bool (``True`` is an ``int`` to Python, not to a user)."""
    return isinstance(value, int) and not isinstance(value, bool)


def prob(name: str, value: float | None) -> None:
    if value is not None:
        check(finite(value) and 0 <= value <= 1, name, value, "must be a probability in [0, 1]")
