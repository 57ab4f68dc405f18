"""Regenerate a table or figure of the README: run its commands, then print it in the README's format.

    python experiments/readme_tables.py --list
    python experiments/readme_tables.py NAME [--dry-run] [--base runs/readme] [--threads N] [--copy-figures]

Every table and figure of the README has a NAME here (``headline``, ``sizes``, ``analyses``,
``run-figures``, ``bias-schedule``, ``adv-bias``, ``lazy-vs-feature``, ``reproduces``,
``sweep``); ``experiments/README.md`` lists them against the README's sections. A table is a
list of ``purify`` commands, each writing into its own folder under ``--base``, and a printer
that reads the results back (``purify.summary.summarize`` for runs, ``purify info`` for
experiments, the combined dataset for sweeps). ``--dry-run`` prints the commands and runs
nothing.  Commands are resumable: a complete run or experiment is reused, a stopped or killed
run is resumed (``--resume``), an unfinished experiment is restarted (``--overwrite``), a
sweep skips its complete cells.  ``--copy-figures`` copies the figures the README shows into
``data/readme/``.

The README's numbers were measured with one torch thread unless it says otherwise
(``--threads 1``); a store is bit-for-bit reproducible only on the same machine and thread
count, so expect the last digit to differ elsewhere.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README_FIGURES = ROOT / "data" / "readme"
EXIT_BAD_INPUT = 2


@dataclass(frozen=True)
class Run:
    """One ``purify simulate`` run of a table: the README's row label and the options."""

    label: str
    folder: str  # under --base
    options: tuple[str, ...]


@dataclass(frozen=True)
class Table:
    """A README table or figure: the commands that produce it and how to print it."""

    section: str  # the README section it regenerates
    commands: Callable[[Path], list[list[str]]]  # argv of `purify`, given --base
    printer: Callable[[Path], None] | None = None
    figures: tuple[tuple[str, str], ...] = ()  # (path under --base, name in data/readme/)
    note: str = ""


# --------------------------------------------------------------------------------------
# The runs the README reports
# --------------------------------------------------------------------------------------


def _run(label: str, options: str) -> Run:
    folder = "simulate-" + (options.replace("--", "").replace(" ", "-") or "default")
    return Run(label, folder, tuple(shlex.split(options)))


DEFAULT = _run("`--d 1000 --k 60` (default)", "--seed 0")
# The README's tables and figures measured before `purification` became the default preset
# ran the `boundary` preset; they spell it out.
BOUNDARY = _run("`--d 1000 --k 60 --preset boundary`", "--preset boundary --seed 0")
HEADLINE = (DEFAULT, BOUNDARY, _run("`--preset boundary --seed 1`", "--preset boundary --seed 1"),
            _run("`--preset boundary --seed 2`", "--preset boundary --seed 2"))
SIZES = (
    _run("`--d 2000 --k 60`", "--d 2000 --k 60 --preset boundary --seed 0"),
    # BOUNDARY's run, labelled like the other rows: the table's text names the preset
    _run("`--d 1000 --k 60`", "--preset boundary --seed 0"),
    _run("`--d 500 --k 20`", "--d 500 --k 20 --preset boundary --seed 0"),
    _run("`--d 200 --k 10`", "--d 200 --k 10 --preset boundary --seed 0"),
    _run("`--d 200 --k 10 --dictionary identity`", "--d 200 --k 10 --dictionary identity --preset boundary --seed 0"),
    _run("`--d 200 --k 10 --sigma-x 1`", "--d 200 --k 10 --sigma-x 1 --preset boundary --seed 0"),
    _run("`--d 100 --k 3`", "--d 100 --k 3 --preset boundary --seed 0"),
)
# Purification vs thresholding along k at d = 1000 (the default preset).
PURIFICATION_K = (
    _run("`--k 20`", "--k 20 --seed 0"),
    _run("`--k 40`", "--k 40 --seed 0"),
    _run("`--k 50`", "--k 50 --seed 0"),
    Run("`--k 60` (default)", DEFAULT.folder, DEFAULT.options),  # the headline's run, labelled as in its table
)
# The same along seeds (1, 2 and 36659, drawn at random) where purification carries the
# robustness at d = 1000 (k = 40, 50) and at the default k = 60; and k = 60 at d = 2000 (two seeds).
PURIFICATION_SEEDS = (
    *(_run(f"`--k {k} --seed {s}`", f"--k {k} --seed {s}") for k, seeds in ((40, (1, 2, 36659)), (50, (1, 2)),
                                                                             (60, (1, 2, 36659))) for s in seeds),
    *(_run(f"`--d 2000 --k 60 --seed {s}`", f"--d 2000 --k 60 --seed {s}") for s in (0, 1)),
)
# The product's own runs of the "Two presets" replay table's d = 500, k = 20 row (three seeds).
PURIFICATION_SIZES = tuple(_run(f"`--d 500 --k 20 --seed {s}`", f"--d 500 --k 20 --seed {s}") for s in (0, 1, 2))
BIAS_SCHEDULE = (
    _run("`--c-b 1`", "--d 200 --k 10 --preset boundary --seed 0 --bias-schedule paper --c-b 1"),
    _run("`--c-b 0.1`", "--d 200 --k 10 --preset boundary --seed 0 --bias-schedule paper --c-b 0.1"),
)
_EARLIER = "--d 1000 --k 60 --preset boundary --seed 0 --p-one 0.001"  # the earlier data default, 1/D
ADV_BIAS = (
    _run("`r → 0.8`, `4d` steps (previous default) | `clean`", f"{_EARLIER} --r-end 0.8 --adv-bias clean"),
    _run("`r → 0.8`, `4d` | `radius`", f"{_EARLIER} --r-end 0.8 --adv-bias radius"),
    _run("`r → 0.8`, `6d`, `6d/5` adversarial steps | `clean`",
         f"{_EARLIER} --r-end 0.8 --clean-steps 6000 --adv-steps 1200 --adv-bias clean"),
    _run("`r → 0.8`, `6d`, `4d/5` adversarial steps | `radius`",
         f"{_EARLIER} --r-end 0.8 --clean-steps 6000 --adv-steps 800 --adv-bias radius"),
    _run("`r → 0.6`, `4d` | `clean`", f"{_EARLIER} --adv-bias clean"),
    _run("`r → 0.6`, `4d` (default schedule) | `radius`", f"{_EARLIER} --adv-bias radius"),
)
EXPERIMENTS = ("lazy-vs-feature", "ntk-lower-bound", "lazy-single-step", "lazy-adversarial", "random-net",
               "ntk-adversarial")
SWEEP = "sweeps/dk"
SWEEP_OPTIONS = ("--d", "50,100,200", "--k", "2,3,5,8", "--seeds", "2", "--norms", "l2", "--radii", "1",
                 "--preset", "boundary")
# The training and evaluation radius at 0.25, 0.5, 0.75 and 1 × 1/√k (default preset otherwise).
RADIUS_SWEEPS = {
    "sweeps/radius-d300-k10": ("--d", "300", "--k", "10", "--tau", "0.0790569,0.1581139,0.2371708,0.3162278"),
    "sweeps/radius-d200-k10": ("--d", "200", "--k", "10", "--tau", "0.0790569,0.1581139,0.2371708,0.3162278"),
}
RUN_FIGURES = ("robust_vs_tau", "pure_vs_dense", "lottery_trajectories", "theta_histograms", "training_curves",
               "coefficient_heatmap", "direction_norm_control", "perturbation_density", "lasso_curves")


def _simulate(runs: tuple[Run, ...]) -> Callable[[Path], list[list[str]]]:
    return lambda base: [["simulate", *r.options, "--out", str(base / r.folder)] for r in runs]


def _experiment(name: str, quick: bool) -> list[str]:
    folder = f"experiments/{name}" + ("-quick" if quick else "")
    return ["experiment", name, *(["--quick"] if quick else []), "--seed", "0", "--out", folder]


def _experiments(names: tuple[str, ...], quick: tuple[bool, ...]) -> Callable[[Path], list[list[str]]]:
    def commands(base: Path) -> list[list[str]]:
        out = []
        for name in names:
            for q in quick:
                argv = _experiment(name, q)
                argv[-1] = str(base / argv[-1])
                out.append(argv)
        return out
    return commands


# --------------------------------------------------------------------------------------
# Printers: the README's rows from the stored results
# --------------------------------------------------------------------------------------


def _summary(base: Path, run: Run) -> dict:
    from purify.summary import summarize

    return summarize(base / run.folder)


def _f(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def _robust(block: dict | None, attack: str | None = None) -> float | None:
    if not block:
        return None
    return block.get("robust_accuracy_by_attack", {}).get(attack) if attack else block.get("robust_accuracy")


def _print_headline(base: Path) -> None:
    from purify.summary import format_summary

    for run in HEADLINE:
        print(f"{' '.join(run.options)}:")
        print(format_summary(_summary(base, run)))


def _print_table(columns: tuple[str, ...], rows: Iterable[tuple[str, ...]]) -> None:
    """A Markdown table: the ``columns`` header and its rule, then a line per row of cells."""
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for cells in rows:
        print("| " + " | ".join(cells) + " |")


def _print_sizes(base: Path) -> None:
    def row(run: Run) -> tuple[str, ...]:
        s = _summary(base, run)
        cells = (s["clean_model"]["clean_accuracy"], _robust(s["clean_model"]), _robust(s.get("bias_only_model")),
                 _robust(s["robust_model"]), s["robust_model"]["clean_accuracy"], _robust(s["ideal_model"]),
                 s["relative_weight_change"], s["median_theta_clean_robust"])
        return (run.label, *(_f(c) for c in cells))

    _print_table(("run", "clean acc before", "robust before", "bias only", "robust after", "clean acc after",
                  "ideal robust", "`Σ‖w−w'‖²/Σ‖w‖²`", "median `θ(w,w')`"), map(row, SIZES))


def _print_purification(runs: tuple[tuple[str, dict], ...], label: str) -> None:
    from purify.final_evaluation import format_r

    def row(name: str, s: dict) -> tuple[str, ...]:
        p, t, pair = s["purification"], s["threshold_model"], s["paired"]
        c, r = s["clean_model"], s["robust_model"]
        return (name, f"{_f(p['dense_alignment_clean'])} → {_f(p['dense_alignment_robust'])}",
                f"{p['effective_r_clean']:.2f} → {p['effective_r_robust']:.2f}",
                f"{_f(c['clean_accuracy'])} / {_f(_robust(c))}", f"{_f(r['clean_accuracy'])} / {_f(_robust(r))}",
                f"({format_r(t['r'])}) {_f(t['clean_accuracy'])} / {_f(_robust(t))}",
                f"{pair['robust_minus_threshold']['value']:+.3f} ({pair['robust_minus_threshold']['se']:.3f})",
                f"{pair['robust_minus_clean']['value']:+.3f} ({pair['robust_minus_clean']['se']:.3f})")

    _print_table((label, "dense alignment clean → robust", "effective `r`", "clean model clean / robust",
                  "robust model clean / robust", "threshold (`r`) clean / robust", "robust − threshold (SE)",
                  "robust − clean (SE)"), (row(*run) for run in runs))


def _print_purification_k(base: Path) -> None:
    _print_purification(tuple((run.label, _summary(base, run)) for run in PURIFICATION_K), "`--d 1000`")


def _print_purification_seeds(base: Path) -> None:
    _print_purification(tuple((run.label, _summary(base, run)) for run in PURIFICATION_SEEDS), "run")


def _print_purification_sizes(base: Path) -> None:
    _print_purification(tuple((run.label, _summary(base, run)) for run in PURIFICATION_SIZES), "run")


def _print_radius_sweeps(base: Path) -> None:
    from purify.summary import summarize

    for sweep in RADIUS_SWEEPS:
        rows = []
        for cell in sorted((base / sweep / "cells").iterdir()):
            s = summarize(cell)
            rows.append((f"`τ = {s['tau'] * s['k'] ** 0.5:.2f}/√k`", s))
        _print_purification(tuple(sorted(rows)), sweep.split("/")[-1])


def _print_bias_schedule(base: Path) -> None:
    def row(run: Run) -> tuple[str, ...]:
        s = _summary(base, run)
        c, r = s["clean_model"], s["robust_model"]
        return (run.label, _f(c["clean_accuracy"]), f"{_f(_robust(c))} → {_f(_robust(r))}",
                f"{_f(_robust(c, 'dense'))} → {_f(_robust(r, 'dense'))}")

    _print_table(("`--bias-schedule paper`", "clean acc", "robust acc at `τ` before → after adv. training",
                  "dense-only acc before → after"), map(row, BIAS_SCHEDULE))


def _print_adv_bias(base: Path) -> None:
    def row(run: Run) -> tuple[str, ...]:
        s = _summary(base, run)
        c, b, r = s["clean_model"], s.get("bias_only_model"), s["robust_model"]
        bias_only = f"{_f(b['clean_accuracy'])} / {_f(_robust(b))}" if b else "—"
        return (run.label, _f(c["clean_accuracy"]), _f(_robust(c)), bias_only, _f(_robust(r)),
                _f(r["clean_accuracy"]), _f(s["relative_weight_change"]), _f(s["median_theta_clean_robust"]))

    _print_table(("clean schedule", "adversarial biases", "clean acc", "robust before", "bias only (clean / robust)",
                  "robust after", "clean acc after", "`Σ‖w−w'‖²/Σ‖w‖²`", "median `θ(w,w')`"), map(row, ADV_BIAS))


def _print_analyses(base: Path) -> None:
    """Every scalar each analysis stored on the default run (the table's numbers are among them)."""
    from purify.analysis import ANALYSES, open_analysis

    run = base / BOUNDARY.folder
    for name in ANALYSES:
        try:
            ds = open_analysis(run, name)
        except Exception as e:  # an analysis a run lacks (e.g. transfer without --transfer-from)
            print(f"{name}: {e}")
            continue
        scalars = {v: float(ds[v]) for v in ds.data_vars if ds[v].ndim == 0 and ds[v].dtype.kind in "fiu"}
        print(f"{name}: " + ", ".join(f"{k} = {v:.4g}" for k, v in scalars.items()))


def _print_experiments(names: tuple[str, ...], quick: tuple[bool, ...]) -> Callable[[Path], None]:
    def printer(base: Path) -> None:
        import purify.cli

        for name in names:
            for q in quick:
                purify.cli.main(["info", str(base / _experiment(name, q)[-1])])
    return printer


def _print_sweep(base: Path) -> None:
    import xarray as xr

    ds = xr.open_zarr(base / SWEEP / "sweep.zarr")
    for name in ("clean_accuracy_before", "robust_accuracy_before", "robust_accuracy_after",
                 "ideal_robust_accuracy", "relative_weight_change", "median_theta_clean_robust"):
        print(f"{name} (mean over seeds):")
        print(ds[name].mean("seed").to_pandas().round(3).to_string())


TABLES: dict[str, Table] = {
    "headline": Table(
        "What a run shows (the printed summary) and Notes: the floors at seeds 0, 1, 2",
        _simulate(HEADLINE), _print_headline),
    "sizes": Table(
        "What a run shows: the table of other sizes", _simulate(SIZES), _print_sizes,
        note="the d = 2000 row takes about an hour on 2 cores"),
    "analyses": Table(
        "Following every neuron: the table of measured claims (analyses of the default run)",
        lambda base: [*_simulate((BOUNDARY,))(base), ["analyze", str(base / BOUNDARY.folder)]], _print_analyses),
    "run-figures": Table(
        "Following every neuron: the figures of the default run",
        lambda base: [*_simulate((BOUNDARY,))(base), ["plot", str(base / BOUNDARY.folder)]],
        figures=tuple((f"{BOUNDARY.folder}/figures/{n}.png", f"{n}.png") for n in RUN_FIGURES)),
    "purification-k": Table(
        "Purification or thresholding?: the runs along k at d = 1000", _simulate(PURIFICATION_K),
        _print_purification_k, note="about 20 minutes per run with one thread"),
    "purification-seeds": Table(
        "Purification or thresholding?: other seeds, and k = 60 at d = 2000", _simulate(PURIFICATION_SEEDS),
        _print_purification_seeds, note="about 20 minutes per run with one thread; the d = 2000 run about 3 hours"),
    "purification-sizes": Table(
        "Purification or thresholding?: the product's runs of the replay table's d = 500, k = 20 row (three seeds)",
        _simulate(PURIFICATION_SIZES), _print_purification_sizes, note="about 2 minutes per run on 2 cores"),
    "purification-radius": Table(
        "Purification or thresholding?: the sweeps over the radius at two sizes",
        lambda base: [["sweep", *opts, "--seed", "0", "--out", str(base / out)] for out, opts in RADIUS_SWEEPS.items()],
        _print_radius_sweeps, note="8 runs, under an hour on 2 cores"),
    "bias-schedule": Table(
        "Bias schedules: the `--bias-schedule paper` table", _simulate(BIAS_SCHEDULE), _print_bias_schedule),
    "adv-bias": Table(
        "Biases of adversarial training: the `--adv-bias` table", _simulate(ADV_BIAS), _print_adv_bias,
        note="the README's rows ran on an earlier version's random stream and sampler: same design, other bits"),
    "lazy-vs-feature": Table(
        "Comparing learners: the lazy-vs-feature figure and its rows of 'What purify reproduces'",
        _experiments(("lazy-vs-feature",), (False, True)), _print_experiments(("lazy-vs-feature",), (False, True)),
        figures=(("experiments/lazy-vs-feature/figures/robust_vs_tau.png", "lazy_vs_feature.png"),),
        note="full mode about 12 minutes on 2 cores"),
    "reproduces": Table(
        "What purify reproduces: every row, full and quick modes of every experiment",
        _experiments(EXPERIMENTS, (False, True)), _print_experiments(EXPERIMENTS, (False, True)),
        note="full modes take hours: lazy-single-step and lazy-adversarial about 3 h each on 2 cores"),
    "sweep": Table(
        "Sweeps: the sweep over d and k and its two figures",
        lambda base: [["sweep", *SWEEP_OPTIONS, "--out", str(base / SWEEP)], ["sweep-plot", str(base / SWEEP)]],
        _print_sweep,
        figures=((f"{SWEEP}/figures/heatmap_k_d.png", "sweep_heatmap_d_k.png"),
                 (f"{SWEEP}/figures/lines_k.png", "sweep_lines_k.png"))),
}


# --------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------


def _status(folder: Path) -> str | None:
    """The store status of a run or experiment folder, or None when it holds none."""
    from purify import store as S

    try:
        return S.read_attrs(folder).get("status")
    except (S.StoreError, OSError):
        return None


def resolve(argv: list[str]) -> list[str] | None:
    """The command to run now for ``argv``: None when its result is complete, resumed or restarted otherwise."""
    if argv[0] not in ("simulate", "experiment"):
        return argv
    out = Path(argv[argv.index("--out") + 1])
    status = _status(out)
    if status == "complete":
        return None
    if status is None:
        return argv
    if argv[0] == "simulate" and status in ("running", "stopped"):
        return ["simulate", "--out", str(out), "--resume"]
    return [*argv, "--overwrite"]


def copy_figures(table: Table, base: Path, dest: Path | None = None) -> list[Path]:
    """Copy ``table``'s figures from the runs under ``base`` into ``dest`` (``data/readme/``)."""
    dest = README_FIGURES if dest is None else dest
    copied = []
    for src, name in table.figures:
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(base / src, dest / name)
        copied.append(dest / name)
    return copied


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="readme_tables.py", description=__doc__.splitlines()[0])
    parser.add_argument("name", nargs="?", help=f"one of: {', '.join(TABLES)}")
    parser.add_argument("--list", action="store_true", help="list the tables and the README section of each")
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    parser.add_argument("--base", type=Path, default=Path("runs/readme"), help="folder of the runs (runs/readme)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (the README used 1 unless noted)")
    parser.add_argument("--copy-figures", action="store_true", help="copy the table's figures into data/readme/")
    args = parser.parse_args(argv)
    if args.list or args.name is None:
        for name, table in TABLES.items():
            print(f"{name:16} {table.section}" + (f" ({table.note})" if table.note else ""))
        return 0
    if args.name not in TABLES:
        print(f"readme_tables.py: error: unknown table {args.name!r}; allowed: {', '.join(TABLES)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.threads is not None and args.threads < 1:
        print(f"readme_tables.py: error: invalid --threads={args.threads}: must be >= 1", file=sys.stderr)
        return EXIT_BAD_INPUT
    table = TABLES[args.name]
    commands = table.commands(args.base)
    if args.dry_run:
        for argv_ in commands:
            print(shlex.join(["purify", *argv_]))
        for src, name in table.figures:
            print(f"# figure: {args.base / src} -> {README_FIGURES.relative_to(ROOT) / name}")
        return 0

    import torch

    import purify.cli

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    for argv_ in commands:
        now = resolve(argv_)
        if now is None:
            print(f"reusing the complete {argv_[argv_.index('--out') + 1]}", file=sys.stderr)
            continue
        print(shlex.join(["purify", *now]), file=sys.stderr)
        code = purify.cli.main(now)
        if code:
            return code
    if table.printer is not None:
        table.printer(args.base)
    if args.copy_figures:
        for path in copy_figures(table, args.base):
            print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

