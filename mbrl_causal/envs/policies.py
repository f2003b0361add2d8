"""Scripted policies for Interventional Pong (demos, data collection, baselines)."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

__all__ = ["POLICIES", "RandomPolicy", "TrackingPolicy", "make_policy"]

POLICIES = ("random", "tracking")


class RandomPolicy:
    """Uniform random actions from the env's action space (seeded)."""

    def __init__(self, env: gym.Env, seed: int | None = None) -> None:
        self.space = env.action_space
        self.space.seed(seed)

    def __call__(self, obs: Any) -> Any:
        return self.space.sample()


class TrackingPolicy:
    """Moves the agent paddle towards the ball's height (read from the env's snapshot).

    It knows nothing of the regime, so under ``controls-inverted`` it moves the wrong way:
    a visible effect of the intervention. Works in every observation mode.

    Args:
        env: The env (any wrapper chain exposing ``get_state``).
        dead_zone: No move while |ball_y - paddle_y| is below this (field units).
    """

    def __init__(self, env: gym.Env, dead_zone: float = 0.75) -> None:
        self.env = env
        self.dead_zone = dead_zone
        self.continuous = isinstance(env.action_space, gym.spaces.Box)

    def __call__(self, obs: Any) -> Any:
        objects = self.env.get_wrapper_attr("get_state")()["objects"]
        dy = objects["ball"]["y"] - objects["agent"]["y"]
        if self.continuous:
            return np.array([np.clip(dy / 1.5, -1.0, 1.0)], np.float32)
        if abs(dy) < self.dead_zone:
            return 0
        return 2 if dy > 0 else 1


def make_policy(name: str, env: gym.Env, seed: int | None = None) -> RandomPolicy | TrackingPolicy:
    """Build a scripted policy by name (``random`` or ``tracking``)."""
    if name == "random":
        return RandomPolicy(env, seed)
    if name == "tracking":
        return TrackingPolicy(env)
    raise ValueError(f"unknown policy {name!r}; allowed: {', '.join(POLICIES)}")
