"""Presets: where a run sits relative to Theorem 5.3 (Allen-Zhu & Li), as defaults of the
fields a user leaves unset."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Preset:
    """Where a run sits relative to Theorem 5.3: the defaults of the fields a user leaves unset.

    ``tau_multiple`` sets the ℓ₂ evaluation (and training) radius ``τ = tau_multiple/√k``,
    ``adv_bias`` the biases of adversarial training and ``adv_steps_per_clean`` its length.
    """

    tau_multiple: float
    adv_bias: str
    adv_steps_per_clean: float


#: ``boundary``: the radius at ``1/√k``, the boundary of Thm 5.3's range, where robustness
#: means ignoring the small coordinates; biases raised to the radius floor (the default of
#: stores written before presets existed).
#: ``purification`` (the default): ``τ = 0.5/√k`` inside the range, each neuron's effective threshold
#: ``b_i√k/‖w_i‖`` kept where clean training left it, and adversarial training long enough for
#: the dense mixture's alignment with ``M w*`` to plateau (README, "Purification or thresholding?").
PRESETS: dict[str, Preset] = {
    "boundary": Preset(tau_multiple=1.0, adv_bias="radius", adv_steps_per_clean=0.2),
    "purification": Preset(tau_multiple=0.5, adv_bias="norm", adv_steps_per_clean=0.5),
}
