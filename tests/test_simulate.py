"""End-to-end tests of purify.simulate through the CLI: store layout, determinism, resume after
SIGKILL/SIGINT, divergence, variants, and a small run that shows the phenomenon."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
from fixtures import assert_same_store, run_main

import purify.simulate as simulate_module
import purify.trainer as trainer_module
from purify import matmul
from purify import store as S
from purify.cli import build_parser, config_from_args
from purify.config import RunConfig
from purify.summary import summarize
from purify.train import Timeline

TINY = [
    "--d", "32", "--k", "3", "--m", "64", "--clean-steps", "60", "--adv-steps", "20",
    "--n-test", "200", "--n-eval", "100", "--batch-size", "128", "--pgd-steps", "3",
    "--clean-snapshots", "4", "--adv-snapshots", "2", "--log-points", "10", "--quiet", "--no-analysis",
    "--preset", "boundary",  # raised biases: the radius-floor and bias-only tests below
    "--eval-attack", "fast",  # last: STANDARD replaces it
]
CHILD_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
GROUPS = ("", "snapshots", "problem", "evaluation", "threshold")  # + attack_strength above fast
VERSION_ATTRS = ("purify_version", "python_version", "torch_version", "numpy_version", "xarray_version",
                 "zarr_version", "sklearn_version")


# --------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------


def simulate_ok(run: Path, *options) -> None:
    code, _, err = run_main("simulate", *options, "--out", run)
    assert code == 0, err


def resume_ok(run: Path) -> str:
    code, stdout, err = run_main("simulate", "--out", run, "--resume", "--quiet", "--no-analysis")
    assert code == 0, err
    return stdout


def config_of(*options) -> RunConfig:
    """The resolved config the CLI builds from ``options``."""
    args = build_parser().parse_args(["simulate", *map(str, options)])
    return config_from_args(args).resolve()


def spawn(run: Path, *options) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "purify.cli", "simulate", *map(str, options), "--out", str(run)]
    return subprocess.Popen(argv, env=CHILD_ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_step(run: Path, proc: subprocess.Popen, step: int, timeout: float = 120.0) -> int:
    """Poll the store until its ``completed_step`` attribute reaches ``step``; return it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            done = S.read_attrs(run).get("completed_step", -1)
        except S.StoreError:  # not created yet
            done = -1
        if done >= step:
            return done
        if proc.poll() is not None:
            raise AssertionError(f"run ended before step {step}: {proc.returncode}\n{proc.stderr.read()}")
        time.sleep(0.002)
    raise AssertionError(f"run did not reach step {step} in {timeout} s")


def check_complete_store(run: Path, cfg: RunConfig) -> None:
    """The documented layout, fully written, consistent with ``cfg``."""
    attrs = S.read_attrs(run)
    assert attrs["status"] == "complete" and attrs["status_reason"] == ""
    tl = Timeline.from_config(cfg)
    tc = cfg.train.clean_steps
    assert attrs["completed_step"] == tl.total
    assert RunConfig.from_json(attrs["config_json"]) == cfg
    assert RunConfig.from_json(attrs["config_json"]).to_json() == attrs["config_json"]
    assert attrs["seed"] == cfg.seed
    for key in VERSION_ATTRS:
        assert isinstance(attrs[key], str) and attrs[key]
    assert attrs["purify_version"] == __import__("purify").__version__
    assert attrs["torch_version"] == torch.__version__

    path = S.store_path(run)
    root = xr.open_zarr(path, consolidated=False)
    snaps = xr.open_zarr(path, group="snapshots", consolidated=False)
    problem = xr.open_zarr(path, group="problem", consolidated=False)
    ev = cfg.eval
    assert dict(root.sizes) == {"step": len(tl.eval_steps), "iteration": len(tl.log_steps),
                                "norm": len(ev.norms), "attack": len(ev.attacks), "radius": len(ev.radii)}
    expected_dims = {
        "loss": ("iteration",), "train_accuracy": ("iteration",), "bias_mean": ("iteration",),
        "sigma_rho_mean": ("iteration",), "weight_norm_mean": ("iteration",),
        "clean_accuracy": ("step",), "robust_accuracy": ("step", "norm", "attack", "radius"),
        "strongest_accuracy": ("step", "norm", "radius"), "ideal_clean_accuracy": (),
        "ideal_robust_accuracy": ("norm", "attack", "radius"), "ideal_strongest_accuracy": ("norm", "radius"),
    }
    assert {name: root[name].dims for name in root.data_vars} == expected_dims
    assert {name: snaps[name].dims for name in snaps.data_vars} == {
        "W": ("step", "neuron", "input"), "b": ("step", "neuron"), "sigma_rho": ("step", "neuron")}
    assert snaps.W.shape == (len(tl.eval_steps), cfg.net.width, cfg.data.d)
    assert {name: problem[name].dims for name in problem.data_vars} == {
        "M": ("input", "feature"), "w_star": ("feature",), "test_label": ("example",)}
    assert problem.M.shape == (cfg.data.d, cfg.data.n_features)

    np.testing.assert_array_equal(root.step.values, tl.eval_steps)
    np.testing.assert_array_equal(snaps.step.values, tl.eval_steps)
    np.testing.assert_array_equal(root.iteration.values, tl.log_steps)
    assert list(root.norm.values) == list(ev.norms)
    assert list(root.attack.values) == list(ev.attacks)
    np.testing.assert_array_equal(root.radius.values, np.array(ev.radii, float))
    np.testing.assert_allclose(root.tau.values, [ev.taus(n) for n in ev.norms])
    # phase: the state after `step` steps; iteration_phase: the phase of the steps averaged
    phase = np.where(tl.eval_steps <= tc, "clean", "adversarial")
    assert list(root.phase.values) == list(phase) == list(snaps.phase.values)
    assert list(root.iteration_phase.values) == list(np.where(tl.log_steps <= tc, "clean", "adversarial"))

    for ds in (root, snaps, problem):
        for name in ds.data_vars:
            assert not np.isnan(ds[name].values).any(), name
    for name in ("train_accuracy", "clean_accuracy", "robust_accuracy", "strongest_accuracy",
                 "ideal_clean_accuracy", "ideal_robust_accuracy", "ideal_strongest_accuracy"):
        values = root[name].values
        assert ((values >= 0) & (values <= 1)).all(), name
    # the per-example strongest attacker is at least as strong as each attacker
    assert (root.strongest_accuracy <= root.robust_accuracy.min("attack")).all()
    assert (root.ideal_strongest_accuracy <= root.ideal_robust_accuracy.min("attack")).all()
    # the stored init and problem are those the seed defines
    np.testing.assert_array_equal(snaps.W.sel(step=0).values, trainer_module.initial_weights(cfg).numpy())
    np.testing.assert_array_equal(problem.M.values, trainer_module.make_problem(cfg).M.numpy())


def check_summary(run: Path) -> dict:
    summary = summarize(run)
    assert summary == json.loads(S.read_attrs(run)["summary_json"])
    for name in ("clean_model", "robust_model", "ideal_model"):
        block = summary[name]
        by_attack = block["robust_accuracy_by_attack"]
        assert block["robust_accuracy"] <= min(by_attack.values())
        # clean accuracy is measured on n_test examples and robust ones on the first n_eval, so
        # this is not an identity; it holds by a wide margin in these runs.
        assert block["robust_accuracy"] <= block["clean_accuracy"]
        assert max(by_attack.values()) <= block["clean_accuracy"] + 0.1
    return summary


# --------------------------------------------------------------------------------------
# The reference run
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ref_config(_one_thread) -> RunConfig:
    return config_of(*TINY, "--seed", "0")


@pytest.fixture(scope="module")
def reference(tmp_path_factory, ref_config) -> Path:
    run = tmp_path_factory.mktemp("simulate") / "reference"
    t0 = time.perf_counter()
    simulate_ok(run, *TINY, "--seed", "0")
    print(f"tiny run in-process: {time.perf_counter() - t0:.2f} s")
    return run


def test_tiny_run_complete_store(reference, ref_config):
    check_complete_store(reference, ref_config)
    assert (reference / "checkpoint.pt").is_file()
    assert not (reference / ".lock").exists()


def test_tiny_run_summary(reference):
    summary = check_summary(reference)
    assert summary["tau"] == pytest.approx(1 / np.sqrt(3))
    assert summary["d"] == 32 and summary["k"] == 3 and summary["m"] == 64 and summary["seed"] == 0
    assert 0 <= summary["median_theta_clean_robust"] <= 1 and summary["relative_weight_change"] >= 0


def test_adversarial_training_freezes_biases_raised_to_the_radius_floor(reference, ref_config, tmp_path):
    snaps = S.load_run(reference, "snapshots")
    tc, tr = ref_config.train.clean_steps, ref_config.train
    adv = [int(s) for s in snaps.step.values if s > tc]
    b_clean, s_clean = snaps.b.sel(step=tc).values, snaps.sigma_rho.sel(step=tc).values
    floor = tr.adv_tau * np.linalg.norm(snaps.W.sel(step=tc).values.astype(np.float64), axis=1)
    expected = np.maximum(b_clean, floor)
    assert (floor > b_clean).mean() > 0.5  # the floor is what sets most biases here
    for step in adv:  # frozen, at the raised values, σ_ρ/b kept
        np.testing.assert_allclose(snaps.b.sel(step=step).values, expected, rtol=1e-5)
        np.testing.assert_allclose(snaps.sigma_rho.sel(step=step).values / expected, s_clean / b_clean, rtol=1e-5)
    # --adv-bias clean keeps the end-of-clean biases (Algorithm 2 taken literally)
    simulate_ok(tmp_path / "clean-bias", *TINY, "--seed", "0", "--adv-bias", "clean")
    other = S.load_run(tmp_path / "clean-bias", "snapshots")
    np.testing.assert_array_equal(other.b.sel(step=tc).values, b_clean)
    for step in adv:
        np.testing.assert_array_equal(other.b.sel(step=step).values, b_clean)


def test_same_seed_same_store_other_seed_other_weights(reference, tmp_path):
    simulate_ok(tmp_path / "again", *TINY, "--seed", "0")
    assert_same_store(reference, tmp_path / "again", GROUPS)

    simulate_ok(tmp_path / "other", *TINY, "--seed", "1")
    W0 = S.load_run(reference, "snapshots").W.values
    W1 = S.load_run(tmp_path / "other", "snapshots").W.values
    assert W0.shape == W1.shape
    assert not np.isclose(W0, W1).all(axis=(1, 2)).any()  # every snapshot differs
    assert not np.array_equal(S.load_run(reference, "problem").M, S.load_run(tmp_path / "other", "problem").M)


def test_resume_of_a_complete_run_changes_nothing(reference, tmp_path):
    run = tmp_path / "copy"
    shutil.copytree(reference, run)
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    stdout = resume_ok(run)
    assert "robust model" in stdout
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


def test_held_out_labels_are_stored_and_another_cpu_evaluates_on_them(reference, ref_config, tmp_path, monkeypatch):
    """A tie ``<w*, z> = 0`` takes the sign of a float32 round-off, which differs between CPU
    vendors; a resume or an analysis on such a machine must score the run's own labels."""
    import purify.data as data_module
    from purify.analysis.rundata import RunData
    from purify.simulate import Simulation

    stored = S.load_run(reference, "problem").test_label.values
    here = Simulation(ref_config, tmp_path / "unused", progress=False).test
    assert stored.dtype == np.int8 and np.array_equal(stored, here.y.numpy())

    w_star = Simulation(ref_config, tmp_path / "unused", progress=False).problem.w_star
    ties = (here.z.double() @ w_star.double() == 0).numpy()
    assert ties.sum() >= 5  # 7 % of the examples at d = 32, k = 3
    this_cpu = data_module.labels

    def other_cpu(z, w):  # the round-off of every tie the other way
        y = this_cpu(z, w)
        return torch.where(z.double() @ w.double() == 0, -y, y)

    monkeypatch.setattr(data_module, "labels", other_cpu)
    run = tmp_path / "copy"
    shutil.copytree(reference, run)
    sim = Simulation(ref_config, run, progress=False)
    assert np.array_equal(sim.test.y.numpy() != stored, ties)  # regenerated: the ties differ
    sim.start_state(resume=True)
    assert np.array_equal(sim.test.y.numpy(), stored) and sim.trainer.test is sim.test
    data = RunData.open(run)
    assert np.array_equal(data.test.y.numpy(), stored) and torch.equal(data.test.x, here.x)
# --------------------------------------------------------------------------------------
# Resume after a kill or an interrupt
# --------------------------------------------------------------------------------------


def test_store_killed_before_its_first_checkpoint_resumes_from_step_zero(reference, ref_config, tmp_path):
    # A kill between store creation and the first checkpoint leaves a store and no checkpoint.
    from purify.simulate import Simulation

    run = tmp_path / "early"
    S.prepare_run_dir(run, overwrite=False, resume=False)
    previous = matmul.backend()
    matmul.set_backend(S.read_attrs(reference)["matmul"])  # the backend purify simulate chose for it
    try:
        Simulation(ref_config, run, progress=False).create()
    finally:
        matmul.set_backend(previous)
    assert S.load_checkpoint(run) is None
    resume_ok(run)
    assert_same_store(run, reference, GROUPS)



@pytest.mark.parametrize("seed", [0, 1, 2])
def test_resume_after_sigkill_is_bitwise_identical(reference, ref_config, tmp_path, seed):
    """Kill the run (SIGKILL) at a seeded random moment after its first checkpoint, resume."""
    rng = random.Random(seed)
    tl = Timeline.from_config(ref_config)
    checkpoints = sorted({0, *tl.log_steps.tolist(), *tl.eval_steps.tolist()})
    target = rng.choice([s for s in checkpoints if s <= 0.85 * tl.total])
    delay = rng.uniform(0.0, 0.1)
    run = tmp_path / "killed"
    proc = spawn(run, *TINY, "--seed", "0")
    try:
        wait_for_step(run, proc, target)
        time.sleep(delay)
        assert proc.poll() is None, "the run finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    attrs = S.read_attrs(run)
    print(f"seed {seed}: killed {delay:.3f} s after step {target}; completed_step={attrs['completed_step']}")
    assert attrs["status"] == "running"
    assert 0 <= attrs["completed_step"] < tl.total

    # the killed run's store opens, and `purify info` reports on it
    for group in ("", "snapshots", "problem"):  # the evaluation groups come at completion
        S.open_run(run, group)
    code, stdout, err = run_main("info", run)
    assert code == 0, err
    assert "status: running" in stdout and "clean model" in stdout
    code, stdout, err = run_main("info", run, "--json")
    assert code == 0, err
    summary = json.loads(stdout, parse_constant=lambda c: pytest.fail(f"non-standard JSON {c}"))
    assert summary["robust_model"]["clean_accuracy"] is None  # not evaluated yet: null, not NaN
    assert summary["ideal_model"]["clean_accuracy"] == pytest.approx(
        check_summary(reference)["ideal_model"]["clean_accuracy"])

    resume_ok(run)
    assert_same_store(reference, run, GROUPS)
    assert not (run / ".lock").exists()


def test_sigint_stops_with_a_hint_and_resumes_identically(reference, tmp_path):
    run = tmp_path / "interrupted"
    proc = spawn(run, *TINY, "--seed", "0")
    try:
        wait_for_step(run, proc, 4)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    hints = [line for line in stderr.splitlines() if "resume with" in line]
    assert len(hints) == 1, stderr
    match = re.fullmatch(r"purify: stopped after step (\d+); resume with: purify simulate --out (.+) --resume",
                         hints[0])
    assert match and match.group(2) == str(run), hints[0]
    step = int(match.group(1))
    attrs = S.read_attrs(run)
    assert attrs["status"] == "stopped"
    assert attrs["status_reason"] == f"interrupted after step {step}"
    assert attrs["completed_step"] == step
    assert not (run / ".lock").exists()

    resume_ok(run)
    assert S.read_attrs(run)["status_reason"] == ""
    assert_same_store(reference, run, GROUPS)


def _stop_at(monkeypatch, step: int, sig: int) -> None:
    """Send ``sig`` to this process during training step ``step`` (1-based) of the next run."""
    real = trainer_module.train_step
    calls = {"n": 0}

    def train_step(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == step:
            os.kill(os.getpid(), sig)
        return real(*args, **kwargs)

    monkeypatch.setattr(trainer_module, "train_step", train_step)


def _stopped_then_resumed(monkeypatch, run: Path, step: int, sig: int, *options) -> None:
    _stop_at(monkeypatch, step, sig)
    code, _, err = run_main("simulate", *options, "--out", run)
    assert code == 130, err
    assert err.splitlines()[-1] == (f"purify: stopped after step {step}; resume with: "
                                    f"purify simulate --out {run} --resume")
    attrs = S.read_attrs(run)
    assert (attrs["status"], attrs["completed_step"]) == ("stopped", step)
    monkeypatch.undo()
    resume_ok(run)


@pytest.mark.parametrize(("where", "sig"), [
    ("clean", signal.SIGINT), ("end-of-clean", signal.SIGTERM), ("first-adversarial", signal.SIGINT),
    ("adversarial", signal.SIGINT), ("last", signal.SIGTERM),
])
def test_stop_at_a_random_step_resumes_identically(reference, ref_config, tmp_path, monkeypatch, where, sig):
    """In-process stops at seeded steps, mostly between checkpoints, in either phase."""
    tl = Timeline.from_config(ref_config)
    tc, rng = tl.clean_steps, random.Random(where)
    step = {"clean": rng.randint(1, tc - 1), "end-of-clean": tc, "first-adversarial": tc + 1,
            "adversarial": rng.randint(tc + 2, tl.total - 1), "last": tl.total}[where]
    run = tmp_path / "stopped"
    _stopped_then_resumed(monkeypatch, run, step, sig, *TINY, "--seed", "0")
    assert_same_store(reference, run, GROUPS)


def test_stop_and_resume_with_noisy_activation_and_pgd_training(tmp_path, monkeypatch):
    """Here the pre-activation noise and the attack's random start draw from their own streams,
    whose states the checkpoint must carry."""
    options = [*TINY, "--seed", "5", "--activation", "noisy", "--adv-attack", "pgd", "--adv-pgd-steps", "2"]
    cfg = config_of(*options)
    simulate_ok(tmp_path / "full", *options)
    check_complete_store(tmp_path / "full", cfg)
    tl = Timeline.from_config(cfg)
    for i, step in enumerate(sorted(random.Random(3).sample(range(1, tl.total), 2))):
        run = tmp_path / f"resumed{i}"
        _stopped_then_resumed(monkeypatch, run, step, signal.SIGINT, *options)
        assert_same_store(tmp_path / "full", run, GROUPS)


# --------------------------------------------------------------------------------------
# The end-of-phase evaluation at strength "standard"
# --------------------------------------------------------------------------------------

STANDARD = [*TINY[:-2], "--eval-attack", "standard", "--seed", "0"]
STANDARD_GROUPS = (*GROUPS, "attack_strength")


@pytest.fixture(scope="module")
def standard(tmp_path_factory, ref_config) -> Path:
    run = tmp_path_factory.mktemp("simulate") / "standard"
    simulate_ok(run, *STANDARD)
    return run


def test_eval_attack_bad_value_is_one_line_exit_2(tmp_path):
    code, stdout, err = run_main("simulate", *TINY, "--eval-attack", "strongest", "--out", tmp_path / "x")
    assert code == 2 and stdout == ""
    assert err == "purify: error: invalid eval-attack='strongest': allowed: fast, standard, strong\n"
    assert not (tmp_path / "x").exists()


def test_strength_leaves_the_per_step_arrays_unchanged(reference, standard):
    """The per-step evaluation is the fast one whatever the strength: the same bits as the fast
    reference, and so are the weights; only the end-of-phase groups differ."""
    for group in ("", "snapshots", "problem"):
        a, b = S.load_run(reference, group), S.load_run(standard, group)
        for name in a.data_vars:
            assert a[name].values.tobytes() == b[name].values.tobytes(), (group, name)
    root = S.load_run(standard)
    assert root.robust_accuracy.attrs["evaluation"].startswith("fast: fgm, pgd-10, dense, noise")
    assert S.load_run(reference, "evaluation").attrs["strength"] == "fast"
    assert S.load_run(standard, "evaluation").attrs["strength"] == "standard"


def test_evaluation_groups_layout_and_invariants(reference, standard, ref_config):
    n = ref_config.data.n_test
    for run, strength in ((reference, "fast"), (standard, "standard")):
        ev = S.load_run(run, "evaluation")
        assert list(ev.model.values) == ["clean", "robust", "bias_only", "threshold", "ideal"]
        cheap = ["fgm", "pgd", "dense", "noise"]
        assert list(ev.attack.values) == cheap + ([] if strength == "fast" else ["converged_pgd", "shrink"])
        assert ev.sizes["example"] == n and ev.attrs["radius_multiple"] == 1.0
        assert ev.robust_correct.dims == ("model", "norm", "example")
        robust, clean = ev.robust_correct.values.astype(bool), ev.clean_correct.values.astype(bool)
        broken = ev.broken_by.values
        assert not (robust & ~clean[:, None, :]).any()  # robust ⇒ clean-correct
        assert ((broken >= 0) == (clean[:, None, :] & ~robust)).all()  # broken ⇔ correct, not robust
        assert broken.max() < ev.sizes["attack"]
        # the cascade is per example at most as robust as each cheap attack alone
        assert not (robust[:, :, None, :] & ~ev.cheap_correct.values.astype(bool)).any()
        np.testing.assert_allclose(ev.tau.values, [ref_config.eval.tau, ref_config.eval.tau_linf])
    fast, std = (S.load_run(r, "evaluation") for r in (reference, standard))
    # same examples and cheap draws: the cheap stage is identical, the standard one breaks more
    np.testing.assert_array_equal(fast.cheap_correct.values, std.cheap_correct.values)
    np.testing.assert_array_equal(fast.clean_correct.values, std.clean_correct.values)
    assert not (std.robust_correct.values.astype(bool) & ~fast.robust_correct.values.astype(bool)).any()
    assert (std.broken_by.values >= 4).any()  # converged PGD or shrink broke a survivor here
    thr = S.load_run(standard, "threshold")
    full, fast_acc = thr.robust_accuracy.sel(norm="l2"), thr.robust_accuracy_fast.sel(norm="l2")
    cand = [float(v) for v in thr.attrs["candidates"].split(",")]
    r = thr.attrs["selected_r"]
    assert r in cand and not np.isnan(thr.robust_accuracy.sel(r=r).values).any()  # every norm
    assert np.isnan(full.drop_sel(r=cand).values).all()
    for c in cand:  # each candidate ran, or could not have beaten the selected one
        assert float(full.sel(r=c)) <= float(fast_acc.sel(r=c)) + 1e-12 or np.isnan(float(full.sel(r=c)))
        assert not np.isnan(float(full.sel(r=c))) or float(fast_acc.sel(r=c)) <= float(full.sel(r=r))
        assert np.isnan(float(full.sel(r=c))) or float(full.sel(r=c)) <= float(full.sel(r=r))
    strength = S.load_run(standard, "attack_strength").accuracy
    assert strength.dims == ("steps", "starts") and list(strength.steps.values) == [10, 30, 100]
    assert (np.diff(strength.values, axis=0) <= 1e-12).all() and (np.diff(strength.values, axis=1) <= 1e-12).all()


def test_standard_summary(standard):
    summary = check_summary(standard)
    for key in ("clean_model", "robust_model", "bias_only_model", "threshold_model", "ideal_model"):
        block = summary[key]
        assert block["evaluation"] == "standard" and block["n_examples"] == 200
        p = block["robust_accuracy"]
        assert block["robust_accuracy_se"] == pytest.approx(np.sqrt(p * (1 - p) / 199))
    assert set(summary["paired"]) == {"robust_minus_threshold", "robust_minus_clean", "robust_minus_bias_only"}
    ev = S.load_run(standard, "evaluation")
    diff = (ev.robust_correct.sel(model="robust", norm="l2").values.astype(float)
            - ev.robust_correct.sel(model="threshold", norm="l2").values.astype(float))
    assert summary["paired"]["robust_minus_threshold"] == pytest.approx(
        {"value": diff.mean(), "se": diff.std(ddof=1) / np.sqrt(diff.size)})
    assert summary["threshold_model"]["r"] == float(S.open_run(standard, "threshold").attrs["selected_r"])
    assert summary["attack_strength"]["steps"] == [10, 30, 100] and isinstance(summary["warnings"], list)
    code, stdout, err = run_main("info", standard)
    assert code == 0, err
    assert re.search(r"threshold model \(r=\d\.(\d|\d{3})\)", stdout) and " ± " in stdout  # grid or refined r


def test_stopped_standard_run_resumes_to_identical_evaluation_groups(standard, tmp_path, monkeypatch):
    """Stopped during training, or killed during the end-of-phase evaluation: the resumed run
    writes the same evaluation groups bit for bit (they draw from their own streams)."""
    run = tmp_path / "resumed"
    _stopped_then_resumed(monkeypatch, run, 50, signal.SIGINT, *STANDARD)
    assert_same_store(standard, run, STANDARD_GROUPS)

    # a run that dies inside the final evaluation is "running" with a checkpoint at the end
    again = tmp_path / "died"
    real = simulate_module.Simulation.final_evaluation

    def die(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(simulate_module.Simulation, "final_evaluation", die)
    code, _, err = run_main("simulate", *STANDARD, "--out", again)
    assert code == 130, err
    assert S.read_attrs(again)["status"] == "running" and not S.has_group(again, "evaluation")
    monkeypatch.setattr(simulate_module.Simulation, "final_evaluation", real)
    resume_ok(again)
    assert_same_store(standard, again, STANDARD_GROUPS)


# --------------------------------------------------------------------------------------
# Divergence
# --------------------------------------------------------------------------------------


def test_divergence_fails_cleanly(tmp_path):
    run = tmp_path / "diverged"
    code, stdout, err = run_main("simulate", *TINY, "--seed", "0", "--lr", "1e30", "--out", run)
    assert code == 1
    assert stdout == ""
    assert "Traceback" not in err
    line = err.splitlines()[-1]
    assert line.startswith("purify: error: ") and "marked failed" in line
    assert [ln for ln in err.splitlines() if ln.startswith("purify: error")] == [line]
    match = re.search(r"step (\d+)", line)
    assert match, line
    assert "lr=1e+30" in line
    step = int(match.group(1))

    attrs = S.read_attrs(run)
    assert attrs["status"] == "failed"
    assert attrs["status_reason"] and f"step {step}" in attrs["status_reason"]
    snaps = S.load_run(run, "snapshots")
    written = snaps.step.values < step
    assert written.any()
    assert np.isfinite(snaps.W.values[written]).all()  # snapshots before divergence are intact
    assert np.isnan(snaps.W.values[~written]).all()
    np.testing.assert_array_equal(snaps.W.sel(step=0).values,
                                  trainer_module.initial_weights(config_of(*TINY, "--seed", "0")).numpy())
    # the failed run still reports, and is refused by a strict reader
    assert run_main("info", run)[0] == 0
    with pytest.raises(S.StoreError, match="failed"):
        S.open_run(run, require_complete=True)


# --------------------------------------------------------------------------------------
# Variants
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("extra", [
    ["--adv-init", "random", "--log-points", "30"],
    ["--bias-schedule", "paper", "--adv-steps", "5"],
], ids=["adv-init-random", "bias-schedule-paper"])
def test_variants_run_to_completion(reference, tmp_path, extra):
    options = [*TINY, "--seed", "0", *extra]
    run = tmp_path / "variant"
    simulate_ok(run, *options)
    cfg = config_of(*options)
    check_complete_store(run, cfg)  # with log steps at T_c + 1: iteration_phase is checked there
    check_summary(run)
    W = S.load_run(run, "snapshots").W
    W_ref = S.load_run(reference, "snapshots").W
    tc = cfg.train.clean_steps
    if "random" in extra:
        # adversarial training restarted from the init, not from the clean weights
        assert cfg.train.adv_init == "random"
        np.testing.assert_array_equal(W.sel(step=tc), W_ref.sel(step=tc))
        first_adv = int(W.step[W.step > tc][0])
        w_adv, w_clean, w_init = (W.sel(step=s).values for s in (first_adv, tc, 0))
        assert np.linalg.norm(w_adv - w_init) < np.linalg.norm(w_adv - w_clean)
        # from init, the radius floor is applied to the adversarial schedule at every step
        snaps = S.load_run(run, "snapshots")
        for step in (int(s) for s in W.step if s > tc):
            floor = cfg.train.adv_tau * np.linalg.norm(W.sel(step=step).values.astype(np.float64), axis=1)
            assert (snaps.b.sel(step=step).values >= floor * (1 - 1e-5)).all()
    else:
        assert cfg.net.bias_schedule == "paper"
        b = S.load_run(run, "snapshots").b
        # the paper's bias is shared by all neurons
        assert (b.max("neuron") == b.min("neuron")).all()


def test_fixed_training_set_runs_and_resumes_identically(tmp_path, monkeypatch):
    options = [*TINY, "--seed", "0", "--n-train", "256"]
    cfg = config_of(*options)
    assert cfg.data.n_train == 256
    simulate_ok(tmp_path / "full", *options)
    check_complete_store(tmp_path / "full", cfg)
    step = random.Random(7).randint(1, Timeline.from_config(cfg).total)
    _stopped_then_resumed(monkeypatch, tmp_path / "resumed", step, signal.SIGINT, *options)
    assert_same_store(tmp_path / "full", tmp_path / "resumed", GROUPS)


# --------------------------------------------------------------------------------------
# The phenomenon, small
# --------------------------------------------------------------------------------------


def test_clean_training_generalizes_but_is_not_robust_and_adversarial_training_helps(tmp_path):
    """d=64, k=4 (so k < d^0.499), seed 0, defaults of the learner spelled out."""
    options = ["--d", "64", "--k", "4", "--m", "128", "--clean-steps", "256", "--adv-steps", "51",
               "--lr", "1", "--batch-size", "512", "--n-test", "2000", "--n-eval", "1000",
               "--radii", "1", "--norms", "l2", "--clean-snapshots", "3", "--adv-snapshots", "1",
               "--log-points", "10", "--seed", "0", "--quiet", "--no-analysis"]
    simulate_ok(tmp_path / "run", *options)
    s = summarize(tmp_path / "run")
    clean, robust = s["clean_model"], s["robust_model"]
    print(json.dumps({"clean_model": clean, "robust_model": robust, "ideal_model": s["ideal_model"]}))
    assert clean["clean_accuracy"] > 0.75  # chance is 0.5
    # the dense direction, which ignores the network, hurts far more than noise of the same norm
    assert clean["robust_accuracy_by_attack"]["dense"] < clean["robust_accuracy_by_attack"]["noise"] - 0.2
    assert clean["robust_accuracy"] < clean["clean_accuracy"] - 0.3
    # adversarial training raises the strongest l2 robust accuracy at the default radius
    assert robust["robust_accuracy"] > clean["robust_accuracy"]


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_phenomenon_across_seeds(tmp_path, seed):
    """The same small phenomenon for other seeds (about 4 s each)."""
    options = ["--d", "64", "--k", "4", "--m", "128", "--clean-steps", "256", "--adv-steps", "51",
               "--lr", "1", "--batch-size", "512", "--n-test", "2000", "--n-eval", "1000",
               "--radii", "1", "--norms", "l2", "--clean-snapshots", "3", "--adv-snapshots", "1",
               "--log-points", "10", "--seed", str(seed), "--quiet", "--no-analysis"]
    simulate_ok(tmp_path / "run", *options)
    s = summarize(tmp_path / "run")
    clean, robust = s["clean_model"], s["robust_model"]
    print(seed, json.dumps({"clean_model": clean, "robust_model": robust}))
    assert clean["clean_accuracy"] > 0.75
    assert clean["robust_accuracy_by_attack"]["dense"] < clean["robust_accuracy_by_attack"]["noise"] - 0.2
    assert robust["robust_accuracy"] > clean["robust_accuracy"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (none on this machine)")
def test_tiny_run_on_cuda_matches_cpu_closely(reference, tmp_path):
    run = tmp_path / "cuda"
    simulate_ok(run, *TINY, "--seed", "0", "--device", "cuda")
    cpu, gpu = S.load_run(reference), S.load_run(run)
    # Same data and seeds; float round-off differs between devices, so compare loosely.
    assert abs(float(cpu.clean_accuracy[-1]) - float(gpu.clean_accuracy[-1])) < 0.1
    assert S.read_attrs(run)["device"].startswith("cuda")
