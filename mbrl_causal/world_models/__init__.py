"""Causal world models: SPARTAN, S2-SSM and their dense baselines.

>>> from mbrl_causal.world_models import WorldModel, WorldModelConfig
>>> model = WorldModel(WorldModelConfig(name="s2ssm", d_model=32, n_heads=2), regime_ids=[0])

``make_world_model(name, regime_ids, **fields)`` builds one by name
(``spartan``, ``s2ssm``, ``dense-transformer``, ``dense-ssm``).
"""

from __future__ import annotations

from typing import Any

from mbrl_causal.world_models.adaptation import fit_regime_token, recall_regime
from mbrl_causal.world_models.config import WORLD_MODELS, FitConfig, WorldModelConfig
from mbrl_causal.world_models.metrics import GraphStats, graph_metrics
from mbrl_causal.world_models.model import (
    LossTerms,
    SequenceBatch,
    WorldModel,
    WorldModelOutput,
)

__all__ = [
    "WORLD_MODELS",
    "FitConfig",
    "GraphStats",
    "LossTerms",
    "SequenceBatch",
    "WorldModel",
    "WorldModelConfig",
    "WorldModelOutput",
    "fit_regime_token",
    "graph_metrics",
    "make_world_model",
    "recall_regime",
]


def make_world_model(
    name: str,
    regime_ids: list[int] | tuple[int, ...],
    action_dim: int = 3,
    discrete_actions: bool = True,
    **fields: Any,
) -> WorldModel:
    """A world model by name; ``fields`` are :class:`WorldModelConfig` fields."""
    return WorldModel(
        WorldModelConfig(name=name, **fields), regime_ids, action_dim, discrete_actions
    )
