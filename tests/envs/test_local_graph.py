"""The local causal graph against counterfactual replays (spec section 5, (a)-(c))."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from mbrl_causal.envs.counterfactual import counterfactual_edges
from mbrl_causal.envs.policies import TrackingPolicy

CASES = [
    ("InterventionalPong-Neutral-v0", {}),
    ("InterventionalPong-Gravity-v0", {}),
    ("InterventionalPong-Curve-v0", {}),
    ("InterventionalPong-Friction-v0", {}),
    ("InterventionalPong-OpponentInverted-v0", {}),
    ("InterventionalPong-OpponentRandom-v0", {}),
    ("InterventionalPong-ControlsInverted-v0", {}),
    ("InterventionalPong-GravityOpponentRandom-v0", {}),
    ("InterventionalPong-CurveControlsInverted-v0", {"action_type": "continuous"}),
    ("InterventionalPong-FrictionOpponentInverted-v0", {}),
    ("InterventionalPongDistractors-v0", {"switch_every_steps": 40}),
]


def _objects(env: gym.Env) -> dict:
    return env.get_wrapper_attr("get_state")()["objects"]


@pytest.mark.parametrize("env_id, kwargs", CASES)
def test_graph_matches_counterfactuals(env_id: str, kwargs: dict) -> None:
    # points_to_win=2 makes episodes short, so resets and points happen in every rollout
    env = gym.make(
        env_id, max_episode_steps=10**9, disable_env_checker=True, points_to_win=2, **kwargs
    )
    nodes = list(env.get_wrapper_attr("graph_nodes"))
    ball, score = nodes.index("ball"), nodes.index("score")
    obs, _ = env.reset(seed=7)
    policy = TrackingPolicy(env)
    rng = np.random.default_rng(7)
    env.action_space.seed(7)  # the test must be deterministic
    events = {"point": 0, "agent_hit": 0, "opponent_hit": 0}
    for t in range(300):
        # alternate tracking play (returns) with a still paddle (misses, so points happen)
        if (t // 50) % 2 == 0:
            action = policy(obs) if rng.random() < 0.7 else env.action_space.sample()
        else:
            action = 0 if kwargs.get("action_type") != "continuous" else np.zeros(1, np.float32)
        state = env.get_wrapper_attr("get_state")()
        revealed = counterfactual_edges(env, state, action)
        env.get_wrapper_attr("set_state")(state)
        obs, _, terminated, truncated, info = env.step(action)
        g = info["local_graph"]
        assert g.shape == (len(nodes), len(nodes) - 2)
        diag = np.eye(*g.shape, dtype=bool)
        assert np.all(g[diag]), "self edges are always true"
        # (a) every edge a small change reveals is in the graph
        assert not np.any(revealed.small & ~g), (t, np.argwhere(revealed.small & ~g))
        # (b) every edge of the graph is revealed by a small change or a large move
        assert not np.any(g & ~(revealed.small | revealed.large | diag)), t
        # (c) points and returns
        after = _objects(env)
        points = after["score"] != state["objects"]["score"]
        if points:
            events["point"] += 1
            assert g[ball, score]
        vx0, vx1 = state["objects"]["ball"]["vx"], after["ball"]["vx"]
        if not points and vx0 > 0 > vx1:
            events["agent_hit"] += 1
            assert g[nodes.index("agent"), ball]
        if not points and vx0 < 0 < vx1:
            events["opponent_hit"] += 1
            assert g[nodes.index("opponent"), ball]
        for i, name in enumerate(nodes[:-2]):
            if name.startswith("distractor_"):
                assert g[:, i].sum() == 1 and g[i].sum() == 1, "distractors: self edge only"
        if terminated or truncated:
            obs, _ = env.reset()
    # the rollout exercised the event rules
    assert events["point"] >= 1 and events["agent_hit"] + events["opponent_hit"] >= 2, events


def test_regime_edges_follow_the_regime_table() -> None:
    """Over a rollout, the regime node points exactly at the objects its row targets."""
    from mbrl_causal.envs.regimes import REGIMES

    for reg in REGIMES:
        env = gym.make("InterventionalPong-v0", regime_schedule=reg.id, disable_env_checker=True)
        env.reset(seed=1)
        env.action_space.seed(1)
        nodes = list(env.get_wrapper_attr("graph_nodes"))
        seen = np.zeros(4, bool)
        for _ in range(300):
            _, _, term, trunc, info = env.step(env.action_space.sample())
            seen |= info["local_graph"][nodes.index("regime")]
            if term or trunc:
                env.reset()
        targeted = {nodes[j] for j in np.flatnonzero(seen)}
        expected = set(reg.targets)
        # a ball-targeting regime may also flip whether a point is scored (regime -> score)
        assert targeted - {"score"} == expected, (reg.name, targeted)
        if "ball" not in reg.targets:
            assert "score" not in targeted
