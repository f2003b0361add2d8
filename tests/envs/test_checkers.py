"""Every registered id, every obs mode: Gymnasium's and SB3's checkers, bounds, determinism."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

from mbrl_causal.envs import ENV_IDS

OBS_MODES = ("objects", "pixels", "dict")
# SB3's check_env also prints layout *recommendations* for its default policies. They follow
# from the spec's observation layout (objects are an (n_objects, 4) array, frames default to
# 32x32, masks are bool (n_objects, S, S)) and are the only warnings allowed; any other
# warning (dtype, bounds, spaces, determinism, NaN) fails the test.
SB3_LAYOUT_NOTES = (
    "has an unconventional shape (neither an image, nor a 1D vector)",
    "The minimal resolution for an image is 36x36 for the default `CnnPolicy`",
    "observation masks is an image but its `dtype` is (bool)",
    "observation space masks is an image but the upper and lower bounds",
)


def _allowed(message: str, mode: str, size: int) -> bool:
    expected = []
    if mode in ("objects", "dict"):
        expected.append(SB3_LAYOUT_NOTES[0])
    if mode in ("pixels", "dict") and size < 36:
        expected.append(SB3_LAYOUT_NOTES[1])
    if mode == "dict":
        expected += [SB3_LAYOUT_NOTES[2], SB3_LAYOUT_NOTES[3]]
    return any(note in message for note in expected)


@pytest.mark.parametrize("mode", OBS_MODES)
@pytest.mark.parametrize("env_id", ENV_IDS)
def test_gymnasium_check_env_no_warnings(env_id: str, mode: str) -> None:
    env = gym.make(env_id, obs_mode=mode, render_mode="rgb_array")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env.unwrapped, skip_render_check=False)
    assert [str(w.message) for w in caught] == []


@pytest.mark.parametrize("size", [32, 84])
@pytest.mark.parametrize("mode", OBS_MODES)
@pytest.mark.parametrize("env_id", ["InterventionalPong-v0", "InterventionalPongDistractors-v0"])
def test_sb3_check_env_only_layout_notes(env_id: str, mode: str, size: int) -> None:
    env = gym.make(env_id, obs_mode=mode, render_size=size)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sb3_check_env(env)
    unexpected = [str(w.message) for w in caught if not _allowed(str(w.message), mode, size)]
    assert unexpected == []


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_sb3_check_env_every_id(env_id: str) -> None:
    env = gym.make(env_id, obs_mode="pixels", render_size=84, observe_regime=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sb3_check_env(env)  # Dict(pixels 84x84, regime): nothing to recommend
    assert [str(w.message) for w in caught] == []


def _rollout(env: gym.Env, seed: int, steps: int) -> list:
    obs, _ = env.reset(seed=seed)
    env.action_space.seed(seed)
    out = [obs]
    for _ in range(steps):
        obs, r, term, trunc, info = env.step(env.action_space.sample())
        out.append((obs, r, term, trunc, info["regime"], info["local_graph"]))
        if term or trunc:
            out.append(env.reset()[0])
    return out


@pytest.mark.parametrize("mode", OBS_MODES)
@pytest.mark.parametrize("env_id", ENV_IDS)
def test_same_seed_same_rollout_and_bounds(env_id: str, mode: str) -> None:
    a = _rollout(gym.make(env_id, obs_mode=mode), 3, 150)
    b = _rollout(gym.make(env_id, obs_mode=mode), 3, 150)
    c = _rollout(gym.make(env_id, obs_mode=mode), 4, 150)
    from gymnasium.utils.env_checker import data_equivalence

    assert data_equivalence(a, b)
    assert not data_equivalence(a, c)
    space = gym.make(env_id, obs_mode=mode).observation_space
    for item in a:
        obs = item[0] if isinstance(item, tuple) else item
        assert space.contains(obs)
        objects = obs["objects"] if isinstance(obs, dict) and "objects" in obs else None
        if mode == "objects":
            objects = obs
        if objects is not None:
            assert objects.dtype == np.float32 and np.all(np.abs(objects) <= 1.0)


def test_continuous_actions_pass_checkers() -> None:
    env = gym.make("InterventionalPong-Neutral-v0", action_type="continuous")
    assert env.action_space == gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env.unwrapped)
    assert [str(w.message) for w in caught] == []
    env.reset(seed=0)
    y0 = env.get_wrapper_attr("get_state")()["objects"]["agent"]["y"]
    env.step(np.array([-1.0], np.float32))  # negative moves up (towards y = 0) by ~1.5
    y1 = env.get_wrapper_attr("get_state")()["objects"]["agent"]["y"]
    assert y1 - y0 == pytest.approx(-1.5, abs=0.5)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"obs_mode": "rgb"}, "obs_mode must be one of"),
        ({"render_size": 48}, "render_size must be one of"),
        ({"action_type": "box"}, "action_type must be one of"),
        ({"points_to_win": 0}, "points_to_win"),
        ({"noise_scale": -1.0}, "noise_scale"),
        ({"regime_schedule": "sometimes"}, "allowed: 0=neutral"),
    ],
)
def test_bad_constructor_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        gym.make("InterventionalPong-v0", **kwargs)


def test_bad_actions_and_options() -> None:
    env = gym.make("InterventionalPong-v0", disable_env_checker=True)
    env.reset(seed=0)
    for bad in (3, -1, 1.5, "up"):
        with pytest.raises(ValueError, match=r"0 \(stay\), 1 \(up\) or 2 \(down\)"):
            env.step(bad)
    with pytest.raises(ValueError, match="allowed: \\['regime'\\]"):
        env.reset(options={"gravity": True})
