"""Binary handwritten digits on the unit sphere, at any input dimension: real data, no download.

Wang, Ullah, Mianjy & Arora (2022, §5) train on MNIST digits 0 vs 1 downsampled from 28×28
to ``d ∈ {5², …, 28²}`` and normalized to ``‖x‖ = 1``.  MNIST needs a download; scikit-learn
ships the UCI optical digits (1 797 images of 8×8 pixels, 16 grey levels) inside the package,
so here the two digits come from :func:`sklearn.datasets.load_digits`.  Each image is
resampled to ``side × side`` — area averaging below 8×8, bilinear interpolation above (so
``d > 64`` holds no information that ``d = 64`` lacks: only the attack's dimension grows) —
centred by the training set's mean image and scaled to the unit sphere, the setting of their
Theorem 3.1 and Appendix A (Figs 5–7).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

#: Side of the images scikit-learn ships.
NATIVE_SIDE = 8


@dataclass(frozen=True)
class BinaryTask:
    """A train/test split of a two-class task with labels ``±1`` and inputs on the unit sphere.

    ``x_train (n_train, d)``, ``y_train (n_train,)``, ``x_test (n_test, d)``, ``y_test (n_test,)``.
    """

    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor

    @property
    def d(self) -> int:
        return self.x_train.shape[1]


def digit_images(classes: tuple[int, int] = (0, 1)) -> tuple[np.ndarray, np.ndarray]:
    """The bundled 8×8 images of two digits and labels ``+1`` (first digit) / ``−1`` (second).

    Returns ``images (n, 8, 8)`` float64 in ``[0, 16]`` and ``y (n,)``; for ``(0, 1)``,
    ``n = 178 + 182 = 360``.
    """
    from sklearn.datasets import load_digits

    a, b = classes
    if a == b or not {a, b} <= set(range(10)):
        raise ValueError(f"classes must be two different digits 0..9, got {classes}")
    bunch = load_digits()
    keep = (bunch.target == a) | (bunch.target == b)
    return bunch.images[keep], np.where(bunch.target[keep] == a, 1.0, -1.0)


def resample(images: Tensor, side: int) -> Tensor:
    """Images ``(n, h, w)`` resampled to ``(n, side, side)``.

    Shrinking averages pixel areas (``F.interpolate(mode="area")``, the analogue of the paper's
    downsampling); enlarging interpolates bilinearly (``align_corners=False``); the native size
    is returned unchanged.
    """
    if side < 1:
        raise ValueError(f"side must be >= 1, got {side}")
    if images.shape[-1] == side and images.shape[-2] == side:
        return images.clone()
    mode = "area" if side < images.shape[-1] else "bilinear"
    kwargs = {} if mode == "area" else {"align_corners": False}
    return F.interpolate(images[:, None], size=(side, side), mode=mode, **kwargs)[:, 0]


def to_sphere(x: Tensor, center: Tensor) -> Tensor:
    """``(x − center)/‖x − center‖`` per row: the unit-sphere inputs of Wang et al. §2."""
    z = x - center
    return z / z.norm(dim=1, keepdim=True).clamp_min(1e-12)


def digits_task(
    side: int,
    *,
    classes: tuple[int, int] = (0, 1),
    test_fraction: float = 1 / 3,
    seed: int,
    dtype=torch.float32,
) -> BinaryTask:
    """Two bundled digits at ``d = side²``, split at random into train and test, on the sphere.

    The split depends only on ``seed`` (not on ``side``), so every dimension sees the same
    images; the centring uses the training images' mean, so no test statistic leaks in.
    """
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    images, y = digit_images(classes)
    order = np.random.default_rng(seed).permutation(len(y))
    n_test = max(1, round(test_fraction * len(y)))
    test, train = order[:n_test], order[n_test:]
    flat = resample(torch.as_tensor(images, dtype=torch.float64), side).reshape(len(y), side * side)
    center = flat[train].mean(dim=0)
    x = to_sphere(flat, center).to(dtype)
    yt = torch.as_tensor(y, dtype=dtype)
    return BinaryTask(x[train], yt[train], x[test], yt[test])
