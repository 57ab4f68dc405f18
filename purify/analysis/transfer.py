"""Transfer of adversarial perturbations between models (Allen-Zhu & Li 2020, §6.2).

§6.2: the dense mixture each neuron accumulates comes from the data (``M w*``), not from the
random initialization, so the perturbation direction that breaks a clean model is "universal":
*adversarial perturbations found on one model also attack other, independently trained ones*.

This analysis crafts ℓ₂ perturbations (FGM and PGD at the run's ``τ``, with the run's
evaluation PGD settings) on each *source* model and applies them to each *target* model, on the
first ``n_examples`` held-out points of ``data``.  The models are the clean (end of clean
training) and robust (end of adversarial training) networks of ``data`` and of every run in
``other``.  "Independently trained on the same distribution" means another seed for the
initialization, the batches and the attacks, but the *same* dictionary ``M``, teacher ``w*`` and
noise: in purify a different seed also draws a different ``M`` and ``w*`` — another
distribution, for which transfer is not what §6.2 predicts — so runs whose problem differs are
refused (``ValueError``).  With no other run, the matrix is the within-run one: clean ↔ robust.

Accuracy convention (as :func:`purify.evaluate.evaluate`): an example counts as correct for a
target model if that model classifies both ``x`` and ``x + δ_source(x)`` correctly.  So the
diagonal is each model's own robust accuracy against the attacker, and for FGM — deterministic —
it reproduces the stored ``robust_accuracy`` at radius 1 exactly when ``n_examples`` is the
run's ``n_eval``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import xarray as xr

from purify import rng
from purify.analysis.rundata import RunData
from purify.attacks import Attack, make_attack
from purify.evaluate import sign_correct
from purify.learners.base import Learner

NAME = "transfer"
ATTACKS = ("fgm", "pgd")
KINDS = ("clean", "robust")


def check_same_problem(data: RunData, other: RunData) -> None:
    """Raise ``ValueError`` unless ``other`` samples the same distribution as ``data`` (§6.2).

    Same distribution = identical dictionary ``M``, teacher ``w*``, hidden-code levels and
    noise parameters (the problem group and the data config); seeds may differ.
    """
    a, b = data.problem, other.problem
    diffs = []
    if not np.array_equal(a.M.numpy(), b.M.numpy()):
        diffs.append("dictionary M")
    if not np.array_equal(a.w_star.numpy(), b.w_star.numpy()):
        diffs.append("teacher w*")
    for field in ("levels", "sigma_x", "spike_level", "spike_prob"):
        if getattr(a, field) != getattr(b, field):
            diffs.append(field)
    if diffs:
        raise ValueError(
            f"transfer needs runs of the same data distribution (Sec. 6.2), but {other.run} differs from "
            f"{data.run} in: {', '.join(diffs)}. A different seed also draws a different M and w*; "
            "train the other run with the same --problem-seed and another --seed.")


def transfer_matrix(
    models: Sequence[Learner],
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    attack: Attack,
    tau: float,
    generator: torch.Generator,
) -> np.ndarray:
    """Accuracy of every target model on the perturbations crafted on every source model.

    Parameters
    ----------
    models : networks with ``forward`` and ``forward_and_input_grad`` (the learners).
    x, y : (n, d) inputs and (n,) labels.
    attack : a :class:`purify.attacks.Attack`.
    tau : its radius.
    generator : the random stream of the attack (consumed source by source, in order).

    Returns
    -------
    (n_models, n_models) array: ``[s, t] = Pr[f_t(x) and f_t(x + δ_s(x)) both correct]``.
    """
    with torch.no_grad():
        clean_ok = [sign_correct(m.forward(x), y) for m in models]
        out = np.zeros((len(models), len(models)))
        for s, source in enumerate(models):
            delta = attack(source, x, y, tau, generator=generator)
            for t, target in enumerate(models):
                ok = sign_correct(target.forward(x + delta), y) & clean_ok[t]
                out[s, t] = float(ok.double().mean())
    return out


def compute(
    data: RunData,
    other: RunData | Sequence[RunData] = (),
    *,
    n_examples: int | None = None,
    attacks: tuple[str, ...] = ATTACKS,
) -> xr.Dataset:
    """Transfer accuracy matrix ``accuracy(source, target_model, attack)`` (§6.2).

    Parameters
    ----------
    data : the run; its held-out set, ``τ`` and PGD settings are used throughout.
    other : further runs of the same problem (checked by :func:`check_same_problem`).
    n_examples : held-out examples (the first ones); ``None`` → the run's ``n_eval``.
    attacks : ℓ₂ attackers crafting the perturbations.

    Returns
    -------
    xr.Dataset
        ``accuracy(source, target_model, attack)`` and ``clean_accuracy(target_model)``; the
        models are labelled ``run<i>:<kind>`` (``run0`` is ``data``) with coordinates
        ``*_run``, ``*_kind``, ``*_seed`` and ``*_step``.
    """
    others = [other] if isinstance(other, RunData) else list(other)
    for o in others:
        check_same_problem(data, o)
    runs = [data, *others]
    cfg = data.config
    ev = cfg.eval
    tau = float(ev.tau_for("l2"))
    n = ev.n_eval if n_examples is None else min(int(n_examples), cfg.data.n_test)
    x, y = data.test.x[:n], data.test.y[:n]

    labels, run_index, kinds, seeds, steps, models = [], [], [], [], [], []
    for i, r in enumerate(runs):
        for kind in KINDS:
            step = r.clean_end if kind == "clean" else r.final
            labels.append(f"run{i}:{kind}")
            run_index.append(i)
            kinds.append(kind)
            seeds.append(int(r.config.seed))
            steps.append(int(step))
            models.append(r.network(step))

    acc = np.zeros((len(models), len(models), len(attacks)))
    for a, name in enumerate(attacks):
        attack = make_attack(name, "l2", pgd_steps=ev.pgd_steps, pgd_rel_step=ev.pgd_rel_step,
                             pgd_restarts=ev.pgd_restarts)
        # One stream per attacker, so adding an attacker does not change another's numbers.
        g = rng.generator(int(cfg.seed), f"analysis/transfer/{name}")
        acc[:, :, a] = transfer_matrix(models, x, y, attack=attack, tau=tau, generator=g)
    with torch.no_grad():
        clean = np.array([float(sign_correct(m.forward(x), y).double().mean()) for m in models])

    def model_coords(dim: str) -> dict:
        return {
            dim: (dim, np.array(labels), {"long_name": f"{dim} model: run<i>:<clean|robust>, run0 = this run"}),
            f"{dim}_run": (dim, np.array(run_index, np.int64), {"long_name": "run index (0 = this run)"}),
            f"{dim}_kind": (dim, np.array(kinds), {"long_name": "clean or robust (adversarially trained) model"}),
            f"{dim}_seed": (dim, np.array(seeds, np.int64), {"long_name": "seed of the model's run"}),
            f"{dim}_step": (dim, np.array(steps, np.int64), {"long_name": "snapshot step of the model"}),
        }

    ds = xr.Dataset(
        {
            "accuracy": (("source", "target_model", "attack"), acc, {
                "long_name": "accuracy of the target model on x + delta crafted on the source model "
                             "(correct on x and on x + delta)"}),
            "clean_accuracy": ("target_model", clean, {
                "long_name": "clean accuracy of the target model on the same examples"}),
        },
        coords={**model_coords("source"), **model_coords("target_model"), "attack": np.array(attacks)},
    )
    ds.attrs.update(
        analysis=NAME, norm="l2", tau=tau, n_examples=int(n), attacks=",".join(attacks), n_runs=len(runs),
        pgd_steps=int(ev.pgd_steps), pgd_restarts=int(ev.pgd_restarts),
        runs=";".join(str(r.run) for r in runs),
        convention="correct iff the target model is right on x and on x + delta (as purify.evaluate)",
        paper="Allen-Zhu & Li 2020, Sec. 6.2 (transfer of the universal dense perturbation)",
    )
    return ds
