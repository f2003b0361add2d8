"""Interventional Pong: the finite-difference pattern lies within info["local_graph"]."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import mbrl_causal.envs  # noqa: F401  (registers the ids)
from mbrl_causal.analysis.pong import block_agreement, collect_pong, pong_step_jacobian
from mbrl_causal.envs.pong import GRAPH_NODES


def test_jacobian_pattern_within_the_local_graph() -> None:
    # What is compared: parents opponent, agent, ball and the continuous action; children
    # opponent, agent, ball (their continuous variables: positions and velocities). The
    # score is an integer count and the regime an id: no derivative exists, so those rows
    # and columns are NaN. A non-zero derivative must be a graph edge; the converse fails
    # by design (saturated opponent speed, clipped hit angle, paddle at a bound, near-miss
    # margin), so each kind of edge must merely be seen by the Jacobian at least once.
    samples = collect_pong("InterventionalPong-v0", steps=150, episodes=1, seed=2)
    agreement = block_agreement(samples, threshold=1e-9)
    assert agreement["outside_graph"] == 0
    per_edge = agreement["per_edge"]
    for edge in ("opponent->opponent", "agent->agent", "ball->ball", "ball->opponent",
                 "action->agent"):  # fmt: skip
        assert per_edge[edge]["jacobian"] > 0, edge
    assert 0.5 < agreement["recall"] <= 1.0
    comparable = samples.extra["comparable"]
    assert comparable.shape == (len(GRAPH_NODES), 4)
    assert not comparable[:, 3].any() and not comparable[3].any() and not comparable[5].any()


def test_state_restored_and_transition_unchanged() -> None:
    runs = []
    for with_jacobian in (False, True):
        env = gym.make("InterventionalPong-v0", action_type="continuous")
        env.reset(seed=7)
        env.action_space.seed(7)
        obs = []
        for _ in range(40):
            a = env.action_space.sample()
            if with_jacobian:
                j = pong_step_jacobian(env, a)
                assert j.J_s.shape == (8, 8) and j.J_a is not None and j.J_a.shape == (8, 1)
            obs.append(env.step(a)[0])
        runs.append(np.array(obs))
    np.testing.assert_array_equal(runs[0], runs[1])


def test_discrete_actions_have_no_action_jacobian() -> None:
    env = gym.make("InterventionalPong-v0")
    env.reset(seed=0)
    j = pong_step_jacobian(env, 1)
    assert j.J_a is None and np.isnan(j.blocks[GRAPH_NODES.index("action")]).all()
    # agent.y moves one for one with its own y (no clip at the centre)
    assert j.J_s[2, 2] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="not an Interventional Pong env"):
        pong_step_jacobian(gym.make("Pendulum-v1"), np.zeros(1))
