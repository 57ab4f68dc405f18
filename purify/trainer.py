"""One run's training in memory: clean (Algorithm 1), then adversarial (Algorithm 2) training.

A :class:`Trainer` holds everything that decides the weights after ``t`` steps — the problem,
the data stream, the ``ρ`` and attack generators, the :class:`~purify.bias_policy.BiasPolicy`
and the training attack — and nothing that records them: :mod:`purify.simulate` drives a
trainer and writes the store, experiments drive one without writing anything.  Its
:meth:`~Trainer.state_dict` is what a checkpoint needs for a resumed run to continue bit for bit.
"""

from __future__ import annotations

import torch
from torch import Tensor

from purify import rng
from purify.attacks import make_attack
from purify.bias_policy import BiasPolicy
from purify.config import RunConfig
from purify.data import DataStream, SparseCodingProblem, make_dictionary, make_teacher
from purify.learners.symmetric import StepResult, SymmetricReLUNet
from purify.train import DivergenceBound, DivergenceError, Timeline, train_step


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


class Trainer:
    """The weights ``W`` (m, d) of one run after :attr:`t` of its ``T_c + T_a`` steps.

    Parameters
    ----------
    config : a resolved :class:`~purify.config.RunConfig` (with a seed).

    Attributes
    ----------
    problem : the run's :class:`~purify.data.SparseCodingProblem` (on the CPU).
    test : the held-out batch (``n_test`` examples, on the device); it scales the divergence
        bound and is what evaluations attack.
    timeline : where the phases, evaluations and log points fall.
    policy : the :class:`~purify.bias_policy.BiasPolicy` giving ``(b, σ_ρ)`` at each step.
    bound : the :class:`~purify.train.DivergenceBound` of the run.
    t, W : steps done and the current weights.
    """

    def __init__(self, config: RunConfig) -> None:
        cfg = self.config = config
        assert cfg.seed is not None, "resolve() first"
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
        tr = cfg.train
        self.train_attack = make_attack(tr.adv_attack, tr.adv_norm, pgd_steps=tr.adv_pgd_steps)
        self.policy = BiasPolicy(cfg)
        # Divergence beyond NaN: bounds from the config and the data's scale (held-out inputs).
        self.bound = DivergenceBound.from_config(cfg, float(self.test.x.square().sum(1).mean().sqrt()))
        self.t = 0
        self.W = initial_weights(cfg).to(self.device)

    def network(self) -> SymmetricReLUNet:
        """The network after :attr:`t` steps, with the biases the policy gives it there."""
        b, s = self.policy(self.W, self.t)
        return SymmetricReLUNet(self.W, b, s)

    def step(self) -> StepResult:
        """One (S)GD step of the current phase; entering adversarial training first at ``T_c``.

        Raises
        ------
        DivergenceError
            The loss became NaN or infinite (the message names the step and the likely cause).
        """
        cfg, tl, tr = self.config, self.timeline, self.config.train
        clean = self.t < tl.clean_steps
        if self.t == tl.clean_steps:
            self._enter_adversarial()
        batch = self.stream.next().to(self.device)
        try:
            W, result = train_step(
                self.network(), batch, lr=tr.lr if clean else tr.adv_lr, lam=cfg.net.lam,
                noisy=cfg.net.activation == "noisy", rho_generator=self.rho_gen,
                attack=None if clean else self.train_attack, tau=tr.adv_tau, attack_generator=self.attack_gen)
        except DivergenceError as e:
            raise DivergenceError(f"diverged at step {self.t + 1}: {e}; {self.bound.cause(clean, cfg)}") from None
        self.W = W
        self.t += 1
        return result

    def _enter_adversarial(self) -> None:
        """Freeze the biases of adversarial training, or restart from init if the config asks."""
        if self.config.train.adv_init == "random":
            self.W = initial_weights(self.config).to(self.device)
            self.policy.release()
        else:
            self.policy.freeze(self.W)

    def check(self, loss: float) -> None:
        """Raise :class:`~purify.train.DivergenceError` if the weights or a log window's mean
        ``loss`` have diverged (:class:`~purify.train.DivergenceBound`)."""
        try:
            self.bound.check(self.W, loss, clean=self.t <= self.timeline.clean_steps, config=self.config)
        except DivergenceError as e:
            raise DivergenceError(f"diverged by step {self.t}: {e}") from None

    def cause(self, clean: bool | None = None) -> str:
        """The likely cause of a divergence in the phase of the last step (or in ``clean``)."""
        if clean is None:
            clean = self.t <= self.timeline.clean_steps
        return self.bound.cause(clean, self.config)

    def state_dict(self) -> dict:
        """What a resumed trainer needs to continue bit for bit (tensors on the CPU)."""
        return {"step": self.t, "W": self.W.cpu(), **self.policy.state_dict(),
                "stream": self.stream.state_dict(), "rho": self.rho_gen.get_state(),
                "attack": self.attack_gen.get_state()}

    def load_state_dict(self, state: dict) -> None:
        """Continue from ``state`` (a :meth:`state_dict`, or a checkpoint holding one's keys)."""
        self.stream.load_state_dict(state["stream"])
        self.rho_gen.set_state(state["rho"])
        self.attack_gen.set_state(state["attack"])
        self.policy.load_state_dict(state, self.device)
        self.t, self.W = int(state["step"]), state["W"].to(self.device)
