"""One run, end to end: data → clean training → adversarial training → evaluation → store.

:func:`simulate` owns the orchestration the pure modules leave out: it pre-allocates the run
store from the resolved config, steps through the :class:`~purify.train.Timeline`, writes
log rows, evaluations and weight snapshots as they happen, checkpoints so a killed run
resumes bit-for-bit, and marks the store ``complete``, ``stopped`` (Ctrl-C) or ``failed``.
"""

from __future__ import annotations

import contextlib
import json
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import xarray as xr
from torch import Tensor

from purify import rng
from purify import store as S
from purify.attacks import Attack, make_attack
from purify.config import ConfigError, RunConfig
from purify.data import Batch, DataStream, SparseCodingProblem, make_dictionary, make_teacher
from purify.evaluate import accuracy, evaluate
from purify.learners.ideal import IdealRobustModel
from purify.learners.symmetric import SymmetricReLUNet
from purify.provenance import versions
from purify.schedules import BiasSchedule, radius_floor
from purify.summary import summarize
from purify.train import CLEAN, DivergenceBound, DivergenceError, Timeline, train_step

#: How the per-step robust accuracies are measured (the end-of-phase models get more: the
#: ``evaluation`` group).
FAST_EVALUATION = "fast: fgm, pgd-10, dense, noise on the first n_eval examples"


class Stopped(Exception):
    """The run was interrupted (SIGINT/SIGTERM) after a checkpoint was written."""

    def __init__(self, step: int) -> None:
        super().__init__(f"stopped after step {step}")
        self.step = step


# --------------------------------------------------------------------------------------
# Problem and state
# --------------------------------------------------------------------------------------


def make_problem(config: RunConfig) -> SparseCodingProblem:
    """The run's dictionary, teacher and noise model, drawn from the ``dictionary``/``teacher``
    streams of its problem seed (the run seed unless ``--problem-seed`` says otherwise), so
    runs that share a problem seed share the data distribution and the held-out set."""
    dc, seed = config.data, config.data_seed
    assert seed is not None and dc.n_features is not None, "resolve() first"
    M = make_dictionary(dc.dictionary, dc.d, dc.n_features, generator=rng.generator(seed, "dictionary"))
    w_star = make_teacher(dc.n_features, generator=rng.generator(seed, "teacher"))
    return SparseCodingProblem(M, w_star, dc.levels, dc.sigma_x, dc.spike_level or 0.0,
                               dc.spike_prob or 0.0)


def initial_weights(config: RunConfig) -> Tensor:
    """``w_i⁰ ~ N(0, σ₀² I)``, shape ``(m, d)``, from the ``init`` stream."""
    net = config.net
    assert config.seed is not None and net.width is not None and net.sigma0 is not None
    g = rng.generator(config.seed, "init")
    return torch.randn(net.width, config.data.d, generator=g) * net.sigma0


def make_attacks(config: RunConfig, problem: SparseCodingProblem) -> dict[str, dict[str, Attack]]:
    """``attacks[norm][name]`` for the evaluation grid."""
    ev = config.eval
    return {
        norm: {
            name: make_attack(name, norm, dense_direction=problem.dense_direction(),
                              pgd_steps=ev.pgd_steps, pgd_rel_step=ev.pgd_rel_step,
                              pgd_restarts=ev.pgd_restarts)
            for name in ev.attacks
        }
        for norm in ev.norms
    }


@dataclass
class _Window:
    """Running means of the batch loss and accuracy between two log points."""

    loss: float = 0.0
    accuracy: float = 0.0
    count: int = 0

    def add(self, loss: float, acc: float) -> None:
        self.loss += loss
        self.accuracy += acc
        self.count += 1


@dataclass
class RunState:
    """Everything a resumed run needs to continue exactly where it stopped."""

    step: int
    W: Tensor
    frozen: tuple[Tensor, Tensor] | None = None  # (b, σ_ρ) of adversarial training
    window: _Window = field(default_factory=_Window)


# --------------------------------------------------------------------------------------
# Store layout
# --------------------------------------------------------------------------------------


def store_template(
    config: RunConfig, timeline: Timeline, problem: SparseCodingProblem, ideal: dict
) -> dict[str, xr.Dataset]:
    """The pre-allocated groups of a run store (NaN where values are still to come)."""
    ev = config.eval
    m, d, D = config.net.width, config.data.d, config.data.n_features
    n_eval, n_log = len(timeline.eval_steps), len(timeline.log_steps)
    norms, attacks, radii = list(ev.norms), list(ev.attacks), list(ev.radii)

    def nan(*shape: int) -> np.ndarray:
        return np.full(shape, np.nan, np.float32)

    coords = {
        "step": ("step", timeline.eval_steps),
        "phase": ("step", timeline.phase(timeline.eval_steps).astype(str)),
        "iteration": ("iteration", timeline.log_steps),
        "iteration_phase": ("iteration", timeline.phase(timeline.log_steps).astype(str)),
        "norm": ("norm", np.array(norms)),
        "attack": ("attack", np.array(attacks)),
        "radius": ("radius", np.array(radii, np.float64)),
        "tau": (("norm", "radius"), np.array([ev.taus(n) for n in norms])),
    }
    root = xr.Dataset(
        {
            "loss": ("iteration", nan(n_log), {"long_name": "mean training objective since the previous log point"}),
            "train_accuracy": ("iteration", nan(n_log), {"long_name": "mean training-batch accuracy (on perturbed inputs in adversarial training)"}),
            "bias_mean": ("iteration", nan(n_log), {"long_name": "mean bias b_i"}),
            "sigma_rho_mean": ("iteration", nan(n_log), {"long_name": "mean smoothing sigma_rho_i"}),
            "weight_norm_mean": ("iteration", nan(n_log), {"long_name": "mean ||w_i||_2"}),
            "clean_accuracy": ("step", nan(n_eval), {"long_name": "held-out clean accuracy"}),
            "robust_accuracy": (("step", "norm", "attack", "radius"), nan(n_eval, len(norms), len(attacks), len(radii)),
                                {"long_name": "held-out accuracy under each attacker at radius tau",
                                 "evaluation": FAST_EVALUATION}),
            "strongest_accuracy": (("step", "norm", "radius"), nan(n_eval, len(norms), len(radii)),
                                   {"long_name": "held-out accuracy under the per-example worst attacker",
                                    "evaluation": FAST_EVALUATION}),
            "ideal_clean_accuracy": ((), np.float32(ideal["clean"])),
            "ideal_robust_accuracy": (("norm", "attack", "radius"), np.stack([ideal["robust"][n] for n in norms]).astype(np.float32),
                                      {"evaluation": FAST_EVALUATION}),
            "ideal_strongest_accuracy": (("norm", "radius"), np.stack([ideal["strongest"][n] for n in norms]).astype(np.float32),
                                         {"evaluation": FAST_EVALUATION}),
        },
        coords=coords,
    )
    snapshots = xr.Dataset(
        {
            "W": (("step", "neuron", "input"), np.full((n_eval, m, d), np.nan, np.float32),
                  {"long_name": "hidden weights w_i as rows"}),
            "b": (("step", "neuron"), nan(n_eval, m), {"long_name": "bias b_i"}),
            "sigma_rho": (("step", "neuron"), nan(n_eval, m), {"long_name": "smoothing sigma_rho_i"}),
        },
        coords={"step": timeline.eval_steps, "phase": ("step", coords["phase"][1])},
    )
    prob = xr.Dataset(
        {
            "M": (("input", "feature"), problem.M.cpu().numpy(), {"long_name": "dictionary (unit-norm columns)"}),
            "w_star": ("feature", problem.w_star.cpu().numpy(), {"long_name": "teacher"}),
        },
        coords={"input": np.arange(d), "feature": np.arange(D)},
    )
    return {"": root, "snapshots": snapshots, "problem": prob}


# --------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------


@dataclass
class Simulation:
    """A run in progress: its config, data, attackers and where it writes."""

    config: RunConfig
    run: Path
    progress: bool = True

    def __post_init__(self) -> None:
        cfg = self.config
        assert cfg.seed is not None
        self.device = torch.device(cfg.device)
        self.timeline = Timeline.from_config(cfg)
        self.problem = make_problem(cfg)
        self.test = self.problem.sample(cfg.data.n_test, generator=rng.generator(cfg.data_seed, "test")).to(self.device)
        train_set = None
        if cfg.data.n_train is not None:
            train_set = self.problem.sample(cfg.data.n_train, generator=rng.generator(cfg.seed, "train_set"))
        self.stream = DataStream(self.problem, batch_size=cfg.train.batch_size,
                                 generator=rng.generator(cfg.seed, "data"), train_set=train_set)
        self.rho_gen = rng.generator(cfg.seed, "rho", self.device)
        self.attack_gen = rng.generator(cfg.seed, "attack", self.device)
        dev_problem = SparseCodingProblem(self.problem.M.to(self.device), self.problem.w_star.to(self.device),
                                          self.problem.levels, self.problem.sigma_x,
                                          self.problem.spike_level, self.problem.spike_prob)
        self.attacks = make_attacks(cfg, dev_problem)
        tr = cfg.train
        self.train_attack = make_attack(tr.adv_attack, tr.adv_norm, pgd_steps=tr.adv_pgd_steps)
        net = cfg.net
        self.clean_schedule = BiasSchedule(net, d=cfg.data.d, k=cfg.data.k, steps=tr.clean_steps, lr=tr.lr)
        self.adv_schedule = BiasSchedule(net, d=cfg.data.d, k=cfg.data.k, steps=tr.adv_steps, lr=tr.adv_lr)
        # Divergence beyond NaN: bounds from the config and the data's scale (held-out inputs).
        self.bound = DivergenceBound.from_config(cfg, float(self.test.x.square().sum(1).mean().sqrt()))
        self._eval_index = {int(s): i for i, s in enumerate(self.timeline.eval_steps)}
        self._log_index = {int(s): i for i, s in enumerate(self.timeline.log_steps)}
        self._stop_requested = False

    # -- the model at a state ---------------------------------------------------------

    def network(self, state: RunState) -> SymmetricReLUNet:
        """The network after ``state.step`` steps, with the bias the schedule gives it there."""
        tc = self.timeline.clean_steps
        if state.step <= tc:
            b, s = self.clean_schedule(state.W, state.step)
        elif state.frozen is not None and self.config.train.adv_bias == "norm":
            # Per-neuron b_i/‖w_i‖ and σ_ρ,i/‖w_i‖ of the end of clean training: the effective
            # threshold b_i√k/‖w_i‖ stays put, so robustness cannot come from raising it.
            norms = state.W.norm(dim=1)
            b, s = state.frozen[0] * norms, state.frozen[1] * norms
        elif state.frozen is not None:
            b, s = state.frozen
        else:  # adversarial training from random init runs its own bias schedule
            b, s = self.adv_schedule(state.W, state.step - tc)
            if self.config.train.adv_bias == "radius":
                tr = self.config.train
                b, s = radius_floor(state.W, b, s, tr.adv_tau, tr.adv_norm)
        return SymmetricReLUNet(state.W, b, s)

    def _ideal(self) -> dict:
        cfg = self.config
        model = IdealRobustModel(self.problem.M.to(self.device), self.problem.w_star.to(self.device), cfg.data.k)
        return self._evaluate(model, index=-1)

    def _evaluate(self, model, index: int) -> dict:
        cfg = self.config
        n = cfg.eval.n_eval
        # A fresh stream per evaluation point: results do not depend on how the run got there.
        g = rng.generator(cfg.seed, f"eval/{index}", self.device)
        e = evaluate(model, self.test.x[:n], self.test.y[:n], attacks=self.attacks,
                     taus={norm: cfg.eval.taus(norm) for norm in cfg.eval.norms}, generator=g)
        return {"clean": accuracy(model, self.test.x, self.test.y), "robust": e.robust, "strongest": e.strongest}

    # -- writes -----------------------------------------------------------------------

    def _write_eval(self, state: RunState) -> None:
        i = self._eval_index[state.step]
        net = self.network(state)
        if not torch.isfinite(net.W).all():
            clean = state.step <= self.timeline.clean_steps
            raise DivergenceError(f"diverged by step {state.step}: the weights became non-finite; "
                                  f"{self.bound.cause(clean, self.config)}")
        res = self._evaluate(net, i)
        norms = self.config.eval.norms
        S.write_region(self.run, "snapshots", "step", i, {
            "W": net.W.cpu().numpy(), "b": net.b.cpu().numpy(), "sigma_rho": net.sigma_rho.cpu().numpy()})
        S.write_region(self.run, "", "step", i, {
            "clean_accuracy": np.float32(res["clean"]),
            "robust_accuracy": np.stack([res["robust"][n] for n in norms]).astype(np.float32),
            "strongest_accuracy": np.stack([res["strongest"][n] for n in norms]).astype(np.float32),
        })

    def _write_log(self, state: RunState) -> None:
        i = self._log_index[state.step]
        net = self.network(state)
        w = state.window
        S.write_region(self.run, "", "iteration", i, {
            "loss": np.float32(w.loss / max(w.count, 1)),
            "train_accuracy": np.float32(w.accuracy / max(w.count, 1)),
            "bias_mean": np.float32(net.b.mean()),
            "sigma_rho_mean": np.float32(net.sigma_rho.mean()),
            "weight_norm_mean": np.float32(net.W.norm(dim=1).mean()),
        })
        state.window = _Window()

    def _checkpoint(self, state: RunState) -> None:
        S.save_checkpoint(self.run, {
            "config_json": self.config.to_json(),
            "seed": self.config.seed,
            "step": state.step,
            "W": state.W.cpu(),
            "frozen": None if state.frozen is None else tuple(t.cpu() for t in state.frozen),
            "window": (state.window.loss, state.window.accuracy, state.window.count),
            "stream": self.stream.state_dict(),
            "rho": self.rho_gen.get_state(),
            "attack": self.attack_gen.get_state(),
        })
        S.update_attrs(self.run, completed_step=state.step)

    def _restore(self, ckpt: dict) -> RunState:
        self.stream.load_state_dict(ckpt["stream"])
        self.rho_gen.set_state(ckpt["rho"])
        self.attack_gen.set_state(ckpt["attack"])
        frozen = ckpt["frozen"]
        if frozen is not None:
            frozen = tuple(t.to(self.device) for t in frozen)
        return RunState(ckpt["step"], ckpt["W"].to(self.device), frozen, _Window(*ckpt["window"]))

    # -- main loop --------------------------------------------------------------------

    def create(self) -> None:
        """Write the pre-allocated store (the ideal model's accuracies are known up front)."""
        attrs = {"config_json": self.config.to_json(), "seed": int(self.config.seed),
                 "device": str(self.device), "torch_threads": torch.get_num_threads(),
                 "completed_step": -1, "summary_json": "", **versions()}
        S.create_store(self.run, store_template(self.config, self.timeline, self.problem, self._ideal()), attrs)

    def start_state(self, resume: bool) -> RunState:
        if resume:
            self._check_layout()
            ckpt = S.load_checkpoint(self.run)
            if ckpt is not None:
                return self._restore(ckpt)
        return RunState(0, initial_weights(self.config).to(self.device))

    def _check_layout(self) -> None:
        """Refuse to resume into a store whose evaluation/log steps differ from this code's
        timeline (a store written by another purify version): indices would be misplaced."""
        root = S.open_run(self.run)
        same = np.array_equal(root.step.values, self.timeline.eval_steps) and np.array_equal(
            root.iteration.values, self.timeline.log_steps)
        if not same:
            raise S.StoreError(f"cannot resume {self.run}: its evaluation steps differ from those this "
                               f"version of purify derives from its config; start it again with --overwrite")

    def run_steps(self, state: RunState) -> RunState:
        """Advance ``state`` to the end of the timeline, writing as it goes."""
        cfg, tl = self.config, self.timeline
        tr = cfg.train
        if state.step == 0:
            self._write_eval(state)
            self._checkpoint(state)
        bars = _Bars(self, state.step) if self.progress else None
        try:
            while state.step < tl.total:
                clean = state.step < tl.clean_steps
                if state.step == tl.clean_steps:
                    state = self._enter_adversarial(state)
                net = self.network(state)
                batch: Batch = self.stream.next().to(self.device)
                try:
                    W, res = train_step(
                        net, batch, lr=tr.lr if clean else tr.adv_lr, lam=cfg.net.lam,
                        noisy=cfg.net.activation == "noisy", rho_generator=self.rho_gen,
                        attack=None if clean else self.train_attack,
                        tau=tr.adv_tau, attack_generator=self.attack_gen)
                except DivergenceError as e:
                    raise DivergenceError(f"diverged at step {state.step + 1}: {e}; "
                                          f"{self.bound.cause(clean, cfg)}") from None
                state.W = W
                state.step += 1
                state.window.add(res.loss, res.accuracy)
                if bars is not None:
                    bars.update(state.step, res.loss, res.accuracy)
                written = False
                if state.step in self._log_index:
                    w = state.window
                    try:
                        self.bound.check(state.W, w.loss / max(w.count, 1), clean=clean, config=cfg)
                    except DivergenceError as e:
                        raise DivergenceError(f"diverged by step {state.step}: {e}") from None
                    self._write_log(state)
                    written = True
                if state.step in self._eval_index:
                    if bars is not None:
                        bars.bar.set_postfix_str("evaluating robustness ...", refresh=True)
                    self._write_eval(state)
                    written = True
                if written:
                    self._checkpoint(state)
                if self._stop_requested:
                    if not written:
                        self._checkpoint(state)
                    raise Stopped(state.step)
        finally:
            if bars is not None:
                bars.close()
        return state

    def _enter_adversarial(self, state: RunState) -> RunState:
        """Fix the biases of adversarial training: the clean ones (``adv_bias = "clean"``, Algorithm 2
        as written), raised to the training radius's floor (``"radius"``), or the clean ``b_i/‖w_i‖``
        kept as the neurons move (``"norm"``); or restart from init if asked."""
        tr = self.config.train
        if tr.adv_init == "random":
            state.W = initial_weights(self.config).to(self.device)
            state.frozen = None
            return state
        net = self.network(state)
        b, s = net.b.clone(), net.sigma_rho.clone()
        if tr.adv_bias == "radius":
            b, s = radius_floor(state.W, b, s, tr.adv_tau, tr.adv_norm)
        elif tr.adv_bias == "norm":
            norms = state.W.norm(dim=1)
            b, s = b / norms, s / norms
        state.frozen = (b, s)
        return state

    def final_evaluation(self) -> None:
        """Write the groups of the end-of-phase evaluation (:mod:`purify.final_evaluation`).

        Computed from the stored snapshots with the run's own ``final/...`` streams, so a run
        resumed after (or during) this step writes the same groups; each group is written
        atomically.
        """
        from purify.final_evaluation import final_evaluation

        log = None
        if self.progress:
            def log(text: str) -> None:
                print(text, file=sys.stderr)
        groups = final_evaluation(self.run, self.config, self.problem, self.test.x, self.test.y, log=log)
        for name, ds in groups.items():
            S.write_group(self.run, name, ds)

    def request_stop(self, *_: object) -> None:
        self._stop_requested = True


class _Bars:
    """One tqdm bar per phase, showing the batch loss and accuracy."""

    def __init__(self, sim: Simulation, step: int) -> None:
        from tqdm.auto import tqdm

        self._tqdm = tqdm
        self.sim = sim
        self.bar = None
        self._phase = None
        self._open(step)

    def _open(self, step: int) -> None:
        tl = self.sim.timeline
        phase = CLEAN if step < tl.clean_steps else "adversarial"
        total, start = (tl.clean_steps, 0) if phase == CLEAN else (tl.adv_steps, tl.clean_steps)
        if self.bar is not None:
            self.bar.close()
        self._phase = phase
        self.bar = self._tqdm(total=total, initial=step - start, desc=f"{phase:>11} training",
                              unit="step", dynamic_ncols=True, mininterval=1.0, file=sys.stderr)

    def update(self, step: int, loss: float, acc: float) -> None:
        if step > self.sim.timeline.clean_steps and self._phase == CLEAN:
            self._open(step - 1)
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{loss:.3f}", acc=f"{acc:.3f}", refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def simulate(
    config: RunConfig,
    run: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    on_start: Callable[[RunConfig], None] | None = None,
) -> dict:
    """Run (or resume) one simulation into ``run`` and return its summary.

    Parameters
    ----------
    config : RunConfig
        The run's config; ignored on resume, where the stored config is used.
    run : path of the run folder (``RUN/store.zarr``, ``RUN/checkpoint.pt``, ...).
    resume : continue the run stored in ``run`` from its last checkpoint.
    overwrite : replace a run already stored in ``run``.
    on_start : called with the resolved config once the folder is accepted and locked.

    Raises
    ------
    purify.store.StoreError
        The folder cannot be used (exists, in use, not a run, ...).
    DivergenceError
        NaN or inf appeared; the store is marked ``failed`` with the message.
    Stopped
        SIGINT/SIGTERM arrived; the store holds a checkpoint to resume from.
    purify.store.StoreWriteError
        Writing the store or a checkpoint failed during the run (disk full, ...): the store is
        marked ``failed`` if it still can be, and resumes from its last checkpoint once fixed.
    """
    run = Path(run)
    mode = S.prepare_run_dir(run, overwrite=overwrite, resume=resume)
    with S.RunLock(run):
        if mode == "resume":
            # Resuming adds to what is stored: a damaged store must not end up "complete".
            attrs = S.verify_run(run)
            if attrs.get("status") == "complete":
                return summarize(run)
            try:
                config = RunConfig.from_json(attrs["config_json"])
            except (KeyError, TypeError, ValueError, ConfigError) as e:
                raise S.StoreError(f"cannot resume {run}: its stored config is unreadable "
                                   f"({type(e).__name__}: {' '.join(str(e).split())[:200]})") from e
            S.load_checkpoint(run)  # refuse a checkpoint of another run before announcing anything
        else:
            config = config.resolve()
        if on_start is not None:
            on_start(config)
        sim = Simulation(config, run, progress=progress)
        if mode == "new":
            sim.create()
        state = sim.start_state(resume=mode == "resume")
        try:
            S.update_attrs(run, status="running", status_reason="")
            # Python lets only the main thread set handlers; elsewhere (a Dask worker thread) the
            # host process owns the signals and a killed run resumes from its checkpoint.
            on_main = threading.current_thread() is threading.main_thread()
            stops = (signal.SIGINT, signal.SIGTERM) if on_main else ()
            previous = {sig: signal.signal(sig, sim.request_stop) for sig in stops}
            try:
                t0 = time.perf_counter()
                sim.run_steps(state)
                S.update_attrs(run, elapsed_seconds=float(time.perf_counter() - t0))
            except Stopped as e:
                S.update_attrs(run, status="stopped", status_reason=f"interrupted after step {e.step}")
                raise
            except DivergenceError as e:
                S.update_attrs(run, status="failed", status_reason=str(e))
                raise
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)
            t0 = time.perf_counter()
            sim.final_evaluation()
            S.update_attrs(run, final_evaluation_seconds=float(time.perf_counter() - t0))
            summary = summarize(run, allow_running=True)
            try:
                _check_finite(summary, sim)
            except DivergenceError as e:
                S.update_attrs(run, status="failed", status_reason=str(e))
                raise
            S.update_attrs(run, status="complete", status_reason="", summary_json=json.dumps(summary))
        except OSError as e:
            raise _write_failed(run, state.step, e) from e
        return summary


def _check_finite(summary: dict, sim: Simulation, where: str = "") -> None:
    """A summary value that is NaN or infinite means the run diverged (e.g. a relative weight
    change of inf after weights exploded while staying finite)."""
    for key, value in summary.items():
        if isinstance(value, dict):
            _check_finite(value, sim, f"{where}{key}.")
        elif isinstance(value, float) and not np.isfinite(value):
            clean = sim.timeline.adv_steps == 0
            raise DivergenceError(f"diverged: the summary's {where}{key} is {value}; "
                                  f"{sim.bound.cause(clean, sim.config)}")


def _write_failed(run: Path, step: int, error: OSError) -> S.StoreWriteError:
    """Mark the store failed after a write error, if the disk still allows it, and say where
    the run can resume from (its chunk and checkpoint writes are atomic: nothing is torn)."""
    try:
        done = S.read_attrs(run).get("completed_step", -1)
    except S.StoreError:
        done = -1
    reason = (f"cannot write to {run}: {error.strerror or error} (at step {step}; the last "
              f"checkpoint is at step {done})")
    marked = False
    with contextlib.suppress(OSError, S.StoreError):
        S.update_attrs(run, status="failed", status_reason=reason)
        marked = True
    note = "the store is marked failed" if marked else "the store could not be marked failed either"
    return S.StoreWriteError(f"{reason}; {note}")
