"""One run recorded: a :class:`~purify.trainer.Trainer` driven to the end, its store written as it goes.

:func:`simulate` pre-allocates the run store from the resolved config, steps a trainer through
its :class:`~purify.train.Timeline`, writes log rows, evaluations and weight snapshots as they
happen, checkpoints (the trainer's state plus the log window) so a killed run resumes
bit-for-bit, and marks the store ``complete``, ``stopped`` (Ctrl-C) or ``failed``.
"""

from __future__ import annotations

import contextlib
import json
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from purify import matmul, rng
from purify import store as S
from purify.config import ConfigError, RunConfig
from purify.data import SparseCodingProblem
from purify.evaluate import accuracy, evaluate, make_attacks
from purify.learners.ideal import IdealRobustModel
from purify.provenance import versions
from purify.schema import PROBLEM, store_template, with_stored_labels
from purify.summary import summarize
from purify.train import CLEAN, DivergenceError, Timeline
from purify.trainer import Trainer


class Stopped(Exception):
    """The run was interrupted (SIGINT/SIGTERM) after a checkpoint was written."""

    def __init__(self, step: int) -> None:
        super().__init__(f"stopped after step {step}")
        self.step = step


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


# --------------------------------------------------------------------------------------
# Store layout
# --------------------------------------------------------------------------------------




# --------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------


@dataclass
class Simulation:
    """A run in progress: its trainer, its evaluation attackers and where it writes."""

    config: RunConfig
    run: Path
    progress: bool = True

    def __post_init__(self) -> None:
        self.trainer = Trainer(self.config)
        self.device, self.timeline = self.trainer.device, self.trainer.timeline
        self.problem, self.test = self.trainer.problem, self.trainer.test
        p = self.problem
        dev_problem = SparseCodingProblem(p.M.to(self.device), p.w_star.to(self.device), p.levels, p.sigma_x,
                                          p.spike_level, p.spike_prob)
        self.attacks = make_attacks(self.config, dev_problem)
        self.window = _Window()
        self._eval_index = {int(s): i for i, s in enumerate(self.timeline.eval_steps)}
        self._log_index = {int(s): i for i, s in enumerate(self.timeline.log_steps)}
        self._stop_requested = False

    def _ideal(self) -> dict:
        model = IdealRobustModel(self.problem.M.to(self.device), self.problem.w_star.to(self.device),
                                 self.config.data.k)
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

    def _write_eval(self) -> None:
        t, net = self.trainer.t, self.trainer.network()
        if not torch.isfinite(net.W).all():
            raise DivergenceError(f"diverged by step {t}: the weights became non-finite; {self.trainer.cause()}")
        i = self._eval_index[t]
        res = self._evaluate(net, i)
        norms = self.config.eval.norms
        S.write_region(self.run, "snapshots", "step", i, {
            "W": net.W.cpu().numpy(), "b": net.b.cpu().numpy(), "sigma_rho": net.sigma_rho.cpu().numpy()})
        S.write_region(self.run, "", "step", i, {
            "clean_accuracy": np.float32(res["clean"]),
            "robust_accuracy": np.stack([res["robust"][n] for n in norms]).astype(np.float32),
            "strongest_accuracy": np.stack([res["strongest"][n] for n in norms]).astype(np.float32),
        })

    def _write_log(self) -> None:
        net, w = self.trainer.network(), self.window
        S.write_region(self.run, "", "iteration", self._log_index[self.trainer.t], {
            "loss": np.float32(w.loss / max(w.count, 1)),
            "train_accuracy": np.float32(w.accuracy / max(w.count, 1)),
            "bias_mean": np.float32(net.b.mean()),
            "sigma_rho_mean": np.float32(net.sigma_rho.mean()),
            "weight_norm_mean": np.float32(net.W.norm(dim=1).mean()),
        })
        self.window = _Window()

    def _checkpoint(self) -> None:
        w = self.window
        S.save_checkpoint(self.run, {"config_json": self.config.to_json(), "seed": self.config.seed,
                                     **self.trainer.state_dict(), "window": (w.loss, w.accuracy, w.count)})
        S.update_attrs(self.run, completed_step=self.trainer.t)

    # -- main loop --------------------------------------------------------------------

    def create(self) -> None:
        """Write the pre-allocated store (the ideal model's accuracies are known up front)."""
        attrs = {"config_json": self.config.to_json(), "seed": int(self.config.seed),
                 "device": str(self.device), "torch_threads": torch.get_num_threads(), "matmul": matmul.backend(),
                 "completed_step": -1, "summary_json": "", **versions()}
        template = store_template(self.config, self.timeline, self.problem, self._ideal(), self.test.y)
        S.create_store(self.run, template, attrs,
                       chunk_along={"snapshots": "step"})  # writing one snapshot rewrites its chunk only

    def start_state(self, resume: bool) -> Trainer:
        """The run's trainer where the run starts: its last checkpoint on ``resume``, else step 0."""
        if resume:
            _check_layout(self.run, self.timeline)
            # On another CPU a few ties may regenerate with other labels: evaluate on the run's own.
            self.test = self.trainer.test = with_stored_labels(self.test, S.open_run(self.run, PROBLEM))
            ckpt = S.load_checkpoint(self.run)
            if ckpt is not None:
                self.trainer.load_state_dict(ckpt)
                self.window = _Window(*ckpt["window"])
        return self.trainer

    def run_steps(self, trainer: Trainer) -> Trainer:
        """Advance this run's ``trainer`` (from :meth:`start_state`) to the end, writing as it goes."""
        assert trainer is self.trainer
        if trainer.t == 0:
            self._write_eval()
            self._checkpoint()
        bars = _Bars(self.timeline, trainer.t) if self.progress else None
        try:
            while trainer.t < self.timeline.total:
                res = trainer.step()
                self.window.add(res.loss, res.accuracy)
                if bars is not None:
                    bars.update(trainer.t, res.loss, res.accuracy)
                written = False
                if trainer.t in self._log_index:
                    trainer.check(self.window.loss / max(self.window.count, 1))
                    self._write_log()
                    written = True
                if trainer.t in self._eval_index:
                    if bars is not None:
                        bars.bar.set_postfix_str("evaluating robustness ...", refresh=True)
                    self._write_eval()
                    written = True
                if written or self._stop_requested:
                    self._checkpoint()
                if self._stop_requested:
                    raise Stopped(trainer.t)
        finally:
            if bars is not None:
                bars.close()
        return trainer

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


def _check_layout(run: Path, timeline: Timeline) -> None:
    """Refuse to resume into a store whose evaluation/log steps differ from this code's
    timeline (a store written by another purify version): indices would be misplaced."""
    root = S.open_run(run)
    same = np.array_equal(root.step.values, timeline.eval_steps) and np.array_equal(
        root.iteration.values, timeline.log_steps)
    if not same:
        raise S.StoreError(f"cannot resume {run}: its evaluation steps differ from those this "
                           f"version of purify derives from its config; start it again with --overwrite")


class _Bars:
    """One tqdm bar per phase, showing the batch loss and accuracy."""

    def __init__(self, timeline: Timeline, step: int) -> None:
        from tqdm.auto import tqdm

        self._tqdm = tqdm
        self.timeline = timeline
        self.bar = None
        self._phase = None
        self._open(step)

    def _open(self, step: int) -> None:
        tl = self.timeline
        phase = CLEAN if step < tl.clean_steps else "adversarial"
        total, start = (tl.clean_steps, 0) if phase == CLEAN else (tl.adv_steps, tl.clean_steps)
        if self.bar is not None:
            self.bar.close()
        self._phase = phase
        self.bar = self._tqdm(total=total, initial=step - start, desc=f"{phase:>11} training",
                              unit="step", dynamic_ncols=True, mininterval=1.0, file=sys.stderr)

    def update(self, step: int, loss: float, acc: float) -> None:
        if step > self.timeline.clean_steps and self._phase == CLEAN:
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
        trainer = sim.start_state(resume=mode == "resume")
        try:
            S.update_attrs(run, status="running", status_reason="")
            # Python lets only the main thread set handlers; elsewhere (a Dask worker thread) the
            # host process owns the signals and a killed run resumes from its checkpoint.
            on_main = threading.current_thread() is threading.main_thread()
            stops = (signal.SIGINT, signal.SIGTERM) if on_main else ()
            previous = {sig: signal.signal(sig, sim.request_stop) for sig in stops}
            try:
                t0 = time.perf_counter()
                sim.run_steps(trainer)
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
                _check_finite(summary, trainer)
            except DivergenceError as e:
                S.update_attrs(run, status="failed", status_reason=str(e))
                raise
            S.update_attrs(run, status="complete", status_reason="", summary_json=json.dumps(summary))
        except OSError as e:
            raise _write_failed(run, trainer.t, e) from e
        return summary


def _check_finite(summary: dict, trainer: Trainer, where: str = "") -> None:
    """A summary value that is NaN or infinite means the run diverged (e.g. a relative weight
    change of inf after weights exploded while staying finite)."""
    for key, value in summary.items():
        if isinstance(value, dict):
            _check_finite(value, trainer, f"{where}{key}.")
        elif isinstance(value, float) and not np.isfinite(value):
            clean = trainer.timeline.adv_steps == 0
            raise DivergenceError(f"diverged: the summary's {where}{key} is {value}; "
                                  f"{trainer.bound.cause(clean, trainer.config)}")


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
