"""The native vector env equals single envs, with Gymnasium's autoreset semantics."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import data_equivalence

from mbrl_causal.envs.vector import InterventionalPongVectorEnv

CASES = [
    ("InterventionalPong-v0", {"switch_every": 2}),
    ("InterventionalPong-Curve-v0", {"obs_mode": "dict"}),
    ("InterventionalPong-GravityControlsInverted-v0", {"obs_mode": "pixels", "render_size": 64}),
    ("InterventionalPongDistractors-v0", {"obs_mode": "dict", "switch_every_steps": 50}),
    (
        "InterventionalPong-v0",
        {"action_type": "continuous", "switch_every_steps": 30, "max_episode_steps": 120,
         "observe_regime": True},
    ),
]  # fmt: skip


def _make_vec(env_id: str, n: int, **kwargs) -> gym.vector.VectorEnv:
    return gym.make_vec(env_id, num_envs=n, vectorization_mode="vector_entry_point", **kwargs)


@pytest.mark.parametrize("env_id, kwargs", CASES)
def test_vector_env_equals_single_envs(env_id: str, kwargs: dict) -> None:
    n, steps = 4, 400
    venv = _make_vec(env_id, n, **kwargs)
    assert isinstance(venv.unwrapped, InterventionalPongVectorEnv)
    envs = [gym.make(env_id, **kwargs) for _ in range(n)]
    vobs, vinfo = venv.reset(seed=10)
    for i, env in enumerate(envs):
        obs, info = env.reset(seed=10 + i)  # sub-env i is seeded with seed + i
        assert data_equivalence(obs, _index(vobs, i))
        assert info["regime"] == vinfo["regime"][i]
    rng = np.random.default_rng(0)
    done = [False] * n
    ends = switches = 0
    for _ in range(steps):
        venv.action_space.seed(int(rng.integers(1 << 30)))
        actions = venv.action_space.sample()
        vobs, vrew, vterm, vtrunc, vinfo = venv.step(actions)
        for i, env in enumerate(envs):
            if done[i]:  # NEXT_STEP autoreset: this step resets the sub-env
                obs, info = env.reset()
                rew, term, trunc = 0.0, False, False
                assert not vinfo["_local_graph"][i]
            else:
                obs, rew, term, trunc, info = env.step(actions[i])
                assert vinfo["_local_graph"][i]
                assert np.array_equal(info["local_graph"], vinfo["local_graph"][i])
            assert data_equivalence(obs, _index(vobs, i))
            assert (rew, term, trunc) == (vrew[i], vterm[i], vtrunc[i])
            assert info["regime"] == vinfo["regime"][i]
            assert info["regime_switched"] == vinfo["regime_switched"][i]
            switches += info["regime_switched"]
            done[i] = term or trunc
            ends += done[i]
    assert ends >= 2, "the rollout must cover autoresets"
    if "switch" in str(kwargs):
        assert switches >= 1


def _index(obs, i):
    return {k: v[i] for k, v in obs.items()} if isinstance(obs, dict) else obs[i]


def test_vector_spaces_and_info_masks() -> None:
    venv = _make_vec("InterventionalPongDistractors-v0", 3, obs_mode="dict")
    assert venv.single_observation_space["objects"].shape == (6, 4)
    assert venv.observation_space["masks"].shape == (3, 6, 32, 32)
    assert venv.unwrapped.graph_nodes[-2:] == ("action", "regime")
    obs, info = venv.reset(seed=0)
    assert venv.observation_space.contains(obs)
    assert info["regime"].shape == (3,) and info["_regime"].all()
    obs, _, _, _, info = venv.step(np.zeros(3, np.int64))
    assert info["local_graph"].shape == (3, 8, 6) and info["local_graph"].dtype == bool


def test_vector_bad_input() -> None:
    venv = _make_vec("InterventionalPong-v0", 2)
    venv.reset(seed=0)
    with pytest.raises(ValueError, match="ints in"):
        venv.step(np.array([0, 3]))
    with pytest.raises(ValueError, match="ints in"):
        venv.step(np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="allowed: regime, reset_mask"):
        venv.reset(options={"speed": 2})
    with pytest.raises(ValueError, match="num_envs"):
        InterventionalPongVectorEnv(num_envs=0)


def test_vector_partial_reset_and_regime_option() -> None:
    venv = _make_vec("InterventionalPong-v0", 3)
    venv.reset(seed=0, options={"regime": "friction"})
    _, info = venv.reset(options={"regime": "gravity", "reset_mask": np.array([True, False, True])})
    assert info["regime"].tolist() == [1, 3, 1]
