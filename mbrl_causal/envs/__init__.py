"""Interventional Pong environments, wrappers and their registration.

Importing this package registers the Gymnasium ids (string entry points, so nothing heavy
is imported until an env is made):

- ``InterventionalPong-v0``: random switching among the simple regimes every 20 episodes;
- ``InterventionalPong-<Name>-v0``: one fixed regime each (``Neutral``, ``Gravity``, ...);
- ``InterventionalPongDistractors-v0``: 2 distractor objects and a medium dynamic
  background on top of ``InterventionalPong-v0``.

All have a 1000-step TimeLimit and a native NumPy vector env
(``gymnasium.make_vec(id, n, vectorization_mode="vector_entry_point")``).
"""

from __future__ import annotations

from typing import Any

from gymnasium.envs.registration import register, registry

from mbrl_causal.envs.regimes import REGIMES, camel_name

__all__ = ["ENV_IDS", "env_catalogue"]

MAX_EPISODE_STEPS = 1000
_ENTRY = "mbrl_causal.envs.pong:InterventionalPongEnv"
_VEC_ENTRY = "mbrl_causal.envs.vector:InterventionalPongVectorEnv"
_DISTRACTOR_ENTRY = "mbrl_causal.envs.distractors:make_distractor_pong"
_DISTRACTOR_VEC_ENTRY = "mbrl_causal.envs.vector:make_distractor_pong_vec"

_CATALOGUE: dict[str, dict[str, Any]] = {
    "InterventionalPong-v0": {
        "entry_point": _ENTRY,
        "vector_entry_point": _VEC_ENTRY,
        "kwargs": {"regime_schedule": "random", "switch_every": 20},
        "regime": "random switching among the simple regimes (0-6) every 20 episodes",
        "description": "Interventional Pong; the mechanism changes every 20 episodes",
    },
    **{
        f"InterventionalPong-{camel_name(r)}-v0": {
            "entry_point": _ENTRY,
            "vector_entry_point": _VEC_ENTRY,
            "kwargs": {"regime_schedule": r.id},
            "regime": f"{r.id} ({r.name}, {'simple' if r.simple else 'composite'})",
            "description": f"Interventional Pong, fixed regime {r.name!r}"
            + (f" (targets: {', '.join(r.targets)})" if r.targets else ""),
        }
        for r in REGIMES
    },
    "InterventionalPongDistractors-v0": {
        "entry_point": _DISTRACTOR_ENTRY,
        "vector_entry_point": _DISTRACTOR_VEC_ENTRY,
        "kwargs": {"regime_schedule": "random", "switch_every": 20},
        "regime": "random switching among the simple regimes (0-6) every 20 episodes",
        "description": "Interventional Pong with 2 distractor objects and a medium dynamic "
        "background (pixels)",
    },
}
ENV_IDS: tuple[str, ...] = tuple(_CATALOGUE)
OBS_MODES = ("objects", "pixels", "dict")


def env_catalogue() -> list[dict[str, Any]]:
    """One record per registered id: id, regime, obs modes, description, kwargs."""
    return [
        {
            "id": env_id,
            "regime": spec["regime"],
            "obs_modes": list(OBS_MODES),
            "description": spec["description"],
            "kwargs": dict(spec["kwargs"]),
            "max_episode_steps": MAX_EPISODE_STEPS,
        }
        for env_id, spec in _CATALOGUE.items()
    ]


for _id, _spec in _CATALOGUE.items():
    if _id not in registry:
        register(
            id=_id,
            entry_point=_spec["entry_point"],
            vector_entry_point=_spec["vector_entry_point"],
            max_episode_steps=MAX_EPISODE_STEPS,
            kwargs=dict(_spec["kwargs"]),
        )
