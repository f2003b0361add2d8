"""Dynamic sparsity analysis: ground-truth Jacobians, sparsity metrics, learned vs true.

Reproduces the analysis of Pandaram et al., "Dynamic Sparsity" (AAAI-26) on Gymnasium's
MuJoCo envs (finite differences of the ``mujoco`` package on CPU) and on Interventional
Pong, and turns it on the project's world models. The command is ``mbrl-causal sparsity``
(:mod:`.command`). Names load lazily (the CLI imports this package on every start, and
mujoco only when a Jacobian is asked for).

>>> from mbrl_causal.analysis import StepJacobian, sparsity_metrics
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "JacobianConfig": "jacobian",
    "JacobianSamples": "jacobian",
    "StepJacobian": "jacobian",
    "StepJacobians": "jacobian",
    "collect_mujoco": "jacobian",
    "env_parts": "jacobian",
    "state_labels": "jacobian",
    "tangent_size": "jacobian",
    "SparsityStats": "metrics",
    "run_lengths": "metrics",
    "sparsity_metrics": "metrics",
    "threshold_sweep": "metrics",
    "PongJacobians": "pong",
    "block_agreement": "pong",
    "collect_pong": "pong",
    "pong_step_jacobian": "pong",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
