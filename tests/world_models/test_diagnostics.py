"""`edge_diagnostics`: event edges and the value of the regime token (fit's `diagnostics`)."""

from __future__ import annotations

import math

import pytest
import torch

from mbrl_causal.envs.pong import GRAPH_NODES
from mbrl_causal.world_models import WorldModel, WorldModelConfig
from mbrl_causal.world_models.data import TransitionData, collect
from mbrl_causal.world_models.diagnostics import edge_diagnostics
from mbrl_causal.world_models.training import evaluate

SMALL = {"d_model": 16, "n_layers": 2, "n_heads": 2, "mlp_hidden": 16}


@pytest.fixture(scope="module")
def data() -> TransitionData:
    # neutral and opponent-inverted: regime -> opponent is true in the second only
    return collect("InterventionalPong-v0", [0, 4], 2400, seed=5, num_envs=2)


def _model(name: str) -> WorldModel:
    torch.manual_seed(0)
    return WorldModel(WorldModelConfig(name=name, **SMALL), [0, 4])


@pytest.mark.parametrize("name", ["spartan", "dense-transformer"])
def test_event_edges_are_the_rare_entries_and_agree_with_per_edge(
    data: TransitionData, name: str
) -> None:
    model = _model(name)
    d = edge_diagnostics(model, data, "objects", 8, GRAPH_NODES, event_max=0.1)
    per_edge = evaluate(model, data, "objects", 8, node_names=GRAPH_NODES)["per_edge"]
    rare = {k for k, v in per_edge.items() if 0.0 < v["true"] <= 0.1}
    assert rare, "the data must hold some paddle hits or points"
    assert set(d["event_edges"]) == rare
    for key, e in d["event_edges"].items():
        # the conditional open rates recombine into per_edge's predicted frequency
        assert math.isclose(e["true"], per_edge[key]["true"], rel_tol=1e-9)
        opened = e["open_when_true"] * e["true"] + e["open_when_false"] * (1 - e["true"])
        assert math.isclose(opened, per_edge[key]["predicted"], rel_tol=1e-6, abs_tol=1e-9)
        assert e["child_mse_when_true"] >= 0.0 and e["child_mse_when_false"] >= 0.0
    # event_max = 1 reports every entry that is ever true
    wide = edge_diagnostics(model, data, "objects", 8, GRAPH_NODES, event_max=1.0)
    assert set(wide["event_edges"]) == {k for k, v in per_edge.items() if v["true"] > 0}


def test_regime_token_value_swaps_the_token(data: TransitionData) -> None:
    model = _model("dense-transformer")
    d = edge_diagnostics(model, data, "objects", 8, GRAPH_NODES)["regime_token_value"]
    assert d["reference"] == "neutral" and list(d["per_regime"]) == ["opponent-inverted"]
    figures = d["per_regime"]["opponent-inverted"]
    assert list(figures) == ["opponent", "agent", "ball", "score"]
    assert figures["opponent"]["edge_true"] > 0.9  # the env's graph: the regime moves it
    assert figures["ball"]["edge_true"] == 0.0
    # a dense model reads the regime token: another token changes every prediction
    assert any(f["mse"] != f["mse_reference_token"] for f in figures.values())
    # with both codebook entries equal, the reference token is the same input
    with torch.no_grad():
        model.codebook.weight[1] = model.codebook.weight[0]
    same = edge_diagnostics(model, data, "objects", 8, GRAPH_NODES)["regime_token_value"]
    for f in same["per_regime"]["opponent-inverted"].values():
        assert f["mse"] == f["mse_reference_token"]


def test_bad_arguments_are_named(data: TransitionData) -> None:
    model = _model("spartan")
    with pytest.raises(ValueError, match="event_max"):
        edge_diagnostics(model, data, "objects", 8, GRAPH_NODES, event_max=0.0)
    with pytest.raises(ValueError, match="node names"):
        edge_diagnostics(model, data, "objects", 8, GRAPH_NODES[:-1])
