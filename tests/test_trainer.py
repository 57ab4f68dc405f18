"""Tests of purify.trainer and purify.bias_policy: the biases of adversarial training under each
policy, and a trainer resumed from its state dict continuing bit for bit."""

from __future__ import annotations

import io

import pytest
import torch

from purify.bias_policy import BiasPolicy
from purify.config import DataConfig, NetConfig, RunConfig, TrainConfig
from purify.trainer import Trainer, initial_weights


def config(adv_bias: str = "radius", *, adv_norm: str = "l2", adv_init: str = "clean", **train) -> RunConfig:
    """A tiny resolved run: d = 24, 30 clean and 12 adversarial steps of batch 32."""
    tr = dict(clean_steps=30, adv_steps=12, batch_size=32, adv_bias=adv_bias, adv_norm=adv_norm,
              adv_init=adv_init, adv_tau=0.4) | train
    return RunConfig(data=DataConfig(d=24, k=4, n_test=64), net=NetConfig(width=40),
                     train=TrainConfig(**tr), seed=7, device="cpu").resolve()


TOTAL = 42  # clean_steps + adv_steps of `config`


def trained(cfg: RunConfig, steps: int) -> Trainer:
    trainer = Trainer(cfg)
    while trainer.t < steps:
        trainer.step()
    return trainer


def test_norm_policy_keeps_each_neurons_bias_and_smoothing_over_its_norm_across_the_switch():
    cfg = config("norm")
    trainer = trained(cfg, cfg.train.clean_steps)
    at_switch = trainer.network()
    ratio_b = at_switch.b / at_switch.W.norm(dim=1)
    ratio_s = at_switch.sigma_rho / at_switch.W.norm(dim=1)
    while trainer.t < trainer.timeline.total:
        trainer.step()
        net = trainer.network()
        norms = net.W.norm(dim=1)
        torch.testing.assert_close(net.b / norms, ratio_b, rtol=1e-6, atol=0)
        torch.testing.assert_close(net.sigma_rho / norms, ratio_s, rtol=1e-6, atol=0)
    moved = trainer.W.norm(dim=1) / at_switch.W.norm(dim=1)
    assert (moved - 1).abs().max() > 1e-3  # the norms did move: the ratios, not the biases, are kept
    assert not torch.allclose(trainer.network().b, at_switch.b)


@pytest.mark.parametrize("norm,q", [("l2", 2.0), ("linf", 1.0)])
def test_radius_policy_puts_every_bias_above_the_radius_times_the_dual_norm(norm, q):
    cfg = config("radius", adv_norm=norm, adv_tau=0.4 if norm == "l2" else 0.4 / 24**0.5)
    trainer = trained(cfg, cfg.train.clean_steps + 1)
    W_switch = trained(cfg, cfg.train.clean_steps).W
    b, s = trainer.policy.frozen
    floor = cfg.train.adv_tau * torch.linalg.vector_norm(W_switch, ord=q, dim=1)
    clean_b, clean_s = trainer.policy.clean_schedule(W_switch, cfg.train.clean_steps)
    assert (b >= floor).all() and (b >= clean_b).all()
    torch.testing.assert_close(b, torch.maximum(clean_b, floor), rtol=0, atol=0)
    raised = b > clean_b
    assert raised.any()  # the floor binds somewhere at this radius, so the test can fail
    torch.testing.assert_close(s / b, clean_s / clean_b, rtol=1e-6, atol=0)  # σ_ρ scaled along
    for _ in range(3):  # frozen while the weights move
        trainer.step()
        net = trainer.network()
        assert torch.equal(net.b, b) and torch.equal(net.sigma_rho, s)


def test_clean_policy_freezes_the_end_of_clean_training_biases():
    cfg = config("clean")
    at_switch = trained(cfg, cfg.train.clean_steps).network()
    trainer = trained(cfg, TOTAL)
    net = trainer.network()
    assert torch.equal(net.b, at_switch.b) and torch.equal(net.sigma_rho, at_switch.sigma_rho)
    assert not torch.equal(net.W, at_switch.W)


def test_random_restart_runs_its_own_schedule_from_init_floored_at_the_radius():
    cfg = config("radius", adv_init="random")
    trainer = trained(cfg, cfg.train.clean_steps + 1)
    assert trainer.policy.frozen is None
    policy = BiasPolicy(cfg)
    W, t = trainer.W, 5
    b, s = policy.adv_schedule(W, t)
    floor = cfg.train.adv_tau * W.norm(dim=1)
    got_b, got_s = policy(W, cfg.train.clean_steps + t)
    torch.testing.assert_close(got_b, torch.maximum(b, floor), rtol=0, atol=0)
    torch.testing.assert_close(got_s / got_b, s / b, rtol=1e-6, atol=0)
    # one step after the restart the weights are near the init, far from the clean ones
    clean_W, init_W = trained(cfg, cfg.train.clean_steps).W, initial_weights(cfg)
    assert (trainer.W - init_W).norm() < 0.5 * (trainer.W - clean_W).norm()


@pytest.mark.parametrize("cut", [0, 30, 33])  # at init, at the switch (nothing frozen yet), after it
@pytest.mark.parametrize("variant", [dict(adv_bias="norm"),
                                     dict(adv_bias="radius", adv_attack="pgd"),
                                     dict(adv_bias="clean", adv_init="random")])
def test_a_trainer_resumed_from_its_state_dict_continues_bit_for_bit(cut, variant):
    cfg = config(**variant)
    whole = trained(cfg, TOTAL)
    first = trained(cfg, cut)
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)  # as a checkpoint stores it
    buffer.seek(0)
    resumed = Trainer(cfg)
    resumed.load_state_dict(torch.load(buffer, weights_only=False))
    assert resumed.t == cut
    while resumed.t < TOTAL:
        resumed.step()
    a, b = whole.network(), resumed.network()
    assert torch.equal(a.W, b.W) and torch.equal(a.b, b.b) and torch.equal(a.sigma_rho, b.sigma_rho)
    state, again = whole.state_dict(), resumed.state_dict()
    assert state["step"] == again["step"] == TOTAL
    assert torch.equal(state["rho"], again["rho"]) and torch.equal(state["attack"], again["attack"])
    assert torch.equal(whole.stream.next().x, resumed.stream.next().x)  # the data stream too


def test_noisy_activation_draws_rho_from_the_state_it_was_saved_with():
    cfg = RunConfig(data=DataConfig(d=24, k=4, n_test=64), net=NetConfig(width=40, activation="noisy"),
                    train=TrainConfig(clean_steps=20, adv_steps=4, batch_size=32), seed=2).resolve()
    whole = trained(cfg, 24)
    first = trained(cfg, 10)
    resumed = Trainer(cfg)
    resumed.load_state_dict(first.state_dict())
    while resumed.t < 24:
        resumed.step()
    assert torch.equal(whole.W, resumed.W)
    other = Trainer(cfg)  # the same weights with a fresh ρ stream end elsewhere: the state matters
    other.t, other.W = first.t, first.W
    other.stream.load_state_dict(first.stream.state_dict())
    while other.t < 24:
        other.step()
    assert not torch.equal(whole.W, other.W)
