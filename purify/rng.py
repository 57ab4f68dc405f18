"""One root seed, many independent named random streams.

Every stochastic function in purify takes a ``torch.Generator``; this module is the only
place that turns the run's root seed into those generators.  Streams are keyed by name
(``"data"``, ``"init"``, ``"attack"``, ...) so that adding a new consumer of randomness never
shifts the numbers another consumer sees, and a run is reproducible from ``(seed, config)``.
"""

from __future__ import annotations

import secrets
import zlib

import numpy as np
import torch


def resolve_seed(seed: int | None) -> int:
    """Return ``seed`` or, when it is ``None``, a fresh one drawn from the OS (to be recorded)."""
    return int(secrets.randbits(31)) if seed is None else int(seed)


def stream_seed(seed: int, name: str) -> int:
    """A 63-bit seed for stream ``name`` derived from the root ``seed`` (numpy ``SeedSequence``)."""
    entropy = [int(seed), zlib.crc32(name.encode())]
    return int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0] >> np.uint64(1))


def generator(seed: int, name: str, device: str | torch.device = "cpu") -> torch.Generator:
    """A ``torch.Generator`` on ``device`` for stream ``name`` of root ``seed``."""
    g = torch.Generator(device=device)
    g.manual_seed(stream_seed(seed, name))
    return g

