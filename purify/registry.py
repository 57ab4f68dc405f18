"""The registries: every attacker, analysis and figure purify knows, one entry each.

Config validation, ``make_attack``, the CLI help, ``analyze``, sweeps and ``plot_run`` read
their lists from here, so adding an attacker, an analysis or a figure is one entry below plus
the module that implements it (README, "How to extend").  An entry names its code as
``"module:attribute"`` (the form of Python entry points), imported only when it is used: this
module imports nothing but the standard library, so ``purify --help`` lists the attackers
without importing torch.

A :class:`Registry` is also the sequence of its names, in registration order (the order in
which ``analyze`` computes and ``plot_run`` draws); :meth:`Registry.where` is a filtered view.
Both are live: an entry registered at run time (:meth:`Registry.register`) appears in them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from importlib import import_module
from typing import Any, Generic, Protocol, TypeVar, overload


def load(ref: str) -> Any:
    """The object ``ref = "package.module:name.attr"`` names (the module imported on first use)."""
    module, _, attrs = ref.partition(":")
    obj: Any = import_module(module)
    for attr in attrs.split(".") if attrs else ():
        obj = getattr(obj, attr)
    return obj


class _Named(Protocol):
    name: str


E = TypeVar("E", bound=_Named)


class Names(Sequence[str]):
    """The names of the entries of a registry whose fields equal ``fields``, read at each use."""

    def __init__(self, registry: Registry[Any], fields: dict[str, Any]) -> None:
        self._registry, self._fields = registry, fields

    def _names(self) -> tuple[str, ...]:
        entries = self._registry._entries.items()
        return tuple(n for n, e in entries if all(getattr(e, k) == v for k, v in self._fields.items()))

    @overload
    def __getitem__(self, i: int) -> str: ...
    @overload
    def __getitem__(self, i: slice) -> tuple[str, ...]: ...
    def __getitem__(self, i: int | slice) -> str | tuple[str, ...]:
        return self._names()[i]

    def __len__(self) -> int:
        return len(self._names())

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __contains__(self, name: object) -> bool:
        return name in self._names()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and not isinstance(other, str) and tuple(self) == tuple(other)

    __hash__ = None  # type: ignore[assignment]  # live, hence mutable

    def __repr__(self) -> str:
        return repr(self._names())


class Registry(Names, Generic[E]):
    """Name → entry, in registration order; as a sequence, the names.

    ``what`` names an entry in messages (``"unknown attack 'x'; allowed: fgm, pgd, ..."``).
    """

    def __init__(self, what: str, entries: Iterable[E] = ()) -> None:
        super().__init__(self, {})
        self.what = what
        self._entries: dict[str, E] = {}
        for entry in entries:
            self.register(entry)

    def entry(self, name: str) -> E:
        """The entry ``name``; ``ValueError`` naming the allowed ones if there is none."""
        if name not in self._entries:
            raise ValueError(f"unknown {self.what} {name!r}; allowed: {', '.join(self)}")
        return self._entries[name]

    def where(self, **fields: Any) -> Names:
        """The names of the entries whose ``fields`` have these values (live view)."""
        return Names(self, fields)

    def register(self, entry: E) -> E:
        """Add ``entry`` last; ``ValueError`` if its name is taken."""
        if entry.name in self._entries:
            raise ValueError(f"{self.what} {entry.name!r} is already registered")
        self._entries[entry.name] = entry
        return entry

    def unregister(self, name: str) -> E:
        """Remove and return the entry ``name``."""
        entry = self.entry(name)
        del self._entries[name]
        return entry


# --------------------------------------------------------------------------------------
# Attackers (purify/attacks/, purify/structured_attacks.py)
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Attacker:
    """An attacker ``A(f, x, y, τ)`` (Allen-Zhu & Li, Def. 4.2).

    ``factory`` is ``"module:callable"``, called as ``factory(norm, options)`` with a
    :class:`purify.attacks.AttackOptions` and returning a :class:`purify.attacks.Attack`.
    ``tier`` is ``"cheap"`` (the evaluation grid: every snapshot, every radius; the default of
    ``eval.attacks``) or ``"strong"`` (end-of-phase, on the examples the cheap ones left
    unbroken); ``trains`` says whether adversarial training may use it (``train.adv_attack``).
    """

    name: str
    factory: str
    tier: str
    trains: bool
    summary: str

    def __post_init__(self) -> None:
        if self.tier not in ("cheap", "strong"):
            raise ValueError(f"attacker {self.name!r}: tier {self.tier!r}; allowed: cheap, strong")


ATTACKERS: Registry[Attacker] = Registry("attack", [
    Attacker("fgm", "purify.attacks.gradient:FGM.from_options", "cheap", True, "fast gradient method: one step of length tau along the input gradient (Def. 4.2)"),
    Attacker("pgd", "purify.attacks.gradient:PGD.from_options", "cheap", True, "projected gradient descent on the margin, best iterate kept (Madry et al. 2018)"),
    Attacker("dense", "purify.attacks.gradient:DenseAttack.from_options", "cheap", False, "the universal dense direction -tau y Mw*/|Mw*| (Thm 5.1c); ignores the model"),
    Attacker("noise", "purify.attacks.gradient:NoiseAttack.from_options", "cheap", False, "control: a random direction of length tau"),
    Attacker("converged_pgd", "purify.attacks.converged:ConvergedPGD.from_options", "strong", False, "PGD to convergence: decaying steps, several starts, per-example best"),
    Attacker("shrink", "purify.structured_attacks:Shrink.from_options", "strong", False, "shrink the label-carrying coordinates, mixed with the dense direction, then polished"),
])


# --------------------------------------------------------------------------------------
# Analyses (purify/analysis/)
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Analysis:
    """A per-run analysis, stored as group ``analysis/<name>`` of the run store.

    ``module`` holds ``compute(data: RunData, **params) -> xarray.Dataset``; with
    ``uses_others`` it is called ``compute(data, other=[RunData, ...])`` with the further runs
    of the same problem (``purify analyze --transfer-from``).  ``sweep`` says whether a sweep
    may run it in every cell and collect its scalars.
    """

    name: str
    module: str
    sweep: bool
    summary: str
    uses_others: bool = False


#: In dependency-free order, cheapest first, so a partial analysis still gives the basics.
ANALYSES: Registry[Analysis] = Registry("analysis", [
    Analysis("purification", "purify.analysis.purification", True, "how far neurons move (theta, Figure 2) and whether directions or norms buy robustness"),
    Analysis("lottery", "purify.analysis.lottery", True, "which feature each neuron is lucky for at init, and whether it wins it (section 6.1)"),
    Analysis("mixture", "purify.analysis.mixture", True, "every neuron as pure features plus a dense mixture (Thm 5.2)"),
    Analysis("perturbations", "purify.analysis.perturbations", True, "adversarial perturbations in the dictionary basis (section 5.1, Figure 7)"),
    Analysis("lasso", "purify.analysis.lasso", True, "sparse reconstruction of inputs and perturbations from the learned features (Figure 12)"),
    Analysis("transfer", "purify.analysis.transfer", False, "transfer of adversarial perturbations between runs of the same problem (section 6.2)", uses_others=True),
])


# --------------------------------------------------------------------------------------
# Figures of a run (purify/plots/)
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FigureEntry:
    """A figure :func:`purify.plots.plot_run` draws into ``RUN/figures/<name>.<fmt>``.

    ``draw`` is ``"module:function"``, called with a :class:`purify.plots.FigureInput` and
    returning a ``matplotlib.figure.Figure`` (``None`` when the run lacks what it shows).
    ``analysis`` is the stored analysis it needs (``None``: the training record suffices);
    ``groups`` the store groups it needs beyond the training record.
    """

    name: str
    draw: str
    summary: str
    analysis: str | None = None
    groups: tuple[str, ...] = ()


#: In drawing order.
FIGURES: Registry[FigureEntry] = Registry("figure", [
    FigureEntry("training_curves", "purify.plots.training:draw_training_curves", "loss, training, clean and robust accuracy over training, the two phases separated"),
    FigureEntry("robust_vs_tau", "purify.plots.robustness:draw_robust_vs_tau", "accuracy vs tau per norm and attacker: clean vs robust vs ideal model"),
    FigureEntry("coefficient_heatmap", "purify.plots.neurons:draw_coefficient_heatmap", "|<M_j, w_i>| of sampled neurons before and after adversarial training"),
    FigureEntry("theta_histograms", "purify.plots.neurons:draw_theta_histograms", "the theta distributions of Figure 2", analysis="purification"),
    FigureEntry("direction_norm_control", "purify.plots.robustness:draw_direction_norm_control", "robustness bought by directions vs by norms", analysis="purification"),
    FigureEntry("lottery_trajectories", "purify.plots.neurons:draw_lottery_trajectories", "<M_j, w_i>^2 of a few surely lucky neurons (Figure 8)", analysis="lottery"),
    FigureEntry("pure_vs_dense", "purify.plots.neurons:draw_pure_vs_dense", "pure vs dense norms over training (Figure 9)", analysis="mixture"),
    FigureEntry("perturbation_density", "purify.plots.robustness:draw_perturbation_density", "density of attack perturbations (Figure 7)", analysis="perturbations"),
    FigureEntry("lasso_curves", "purify.plots.lasso:draw_lasso_curves", "reconstruction error vs sparsity (Figure 12)", analysis="lasso"),
    FigureEntry("threshold_frontier", "purify.plots.evaluation:draw_threshold_frontier", "clean vs robust accuracy of the threshold baseline along r", groups=("threshold", "evaluation")),
    FigureEntry("attack_strength", "purify.plots.evaluation:draw_attack_strength", "robust accuracy vs attack steps and starts", groups=("attack_strength",)),
])
