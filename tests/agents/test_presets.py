"""The named presets of `train`: every name loads for both agent families, and the
`efficient` preset is exactly the recipe whose figures docs/results/ report (the commands
written there, as quick + `--set`), so that the preset and the measured runs cannot drift
apart."""

from __future__ import annotations

from pathlib import Path

import pytest

from mbrl_causal.agents.config import PRESETS, load_preset
from mbrl_causal.agents.sb3_agents import load_sb3_preset, resolve_sb3
from mbrl_causal.agents.train import TrainRequest, resolve_configs
from mbrl_causal.cli import main

NEUTRAL = "InterventionalPong-Neutral-v0"

# The price of the sparse models' gates as measured in both agents (docs/results/agent.md,
# first bullet; docs/results/sb3.md, "Shorter iterations").
RECIPE = ["tau_factor=1.5", "gate_detach=true", "gate_score_cap=5", "sparsity_warmup=6000",
          "lambda_min=0.0001", "lambda_init=0.0001", "lambda_max=0.001",
          "gate_explore=0.3"]  # fmt: skip

# docs/results/agent.md: the Dreamer agent's command (threads aside).
DREAMER_MEASURED = ["train_ratio=512", "keep_checkpoints=100", "checkpoint_every=2000",
                    "tau_reference=dense", *RECIPE,
                    "lambda_schedule=[[10000, 0.005, 0.01]]"]  # fmt: skip

# docs/results/sb3.md, "Shorter iterations": the `ppo-imagination` command (threads aside).
SB3_MEASURED = ["keep_checkpoints=100", "checkpoint_every=2000", "seq_len=32", "prefill=2000",
                "n_steps=16", "ppo_batch_size=512", "ent_coef=0.03", *RECIPE,
                "collect_steps=400", "wm_updates=800", "imag_steps=28672"]  # fmt: skip


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_name_resolves_for_both_agent_families(name: str) -> None:
    """A name in PRESETS needs presets/NAME.yaml and presets/sb3-NAME.yaml, each giving a
    valid config whose fields are the file's."""
    for (agent, model), (cfg, wm) in (
        (load_preset(name), resolve_configs(TrainRequest(preset=name))),
        (load_sb3_preset(name), resolve_sb3(TrainRequest(preset=name), "ppo-imagination")),
    ):
        assert {k: getattr(cfg, k) for k in agent} == agent
        assert {k: getattr(wm, k) for k in model} == model


def test_efficient_preset_is_the_measured_dreamer_recipe() -> None:
    preset = resolve_configs(TrainRequest(preset="efficient", env=NEUTRAL))
    measured = resolve_configs(TrainRequest(preset="quick", env=NEUTRAL, steps=16000,
                                            overrides=DREAMER_MEASURED))  # fmt: skip
    assert preset[0].to_dict() == measured[0].to_dict()
    assert preset[1].to_dict() == measured[1].to_dict()
    assert preset[1].lambda_schedule == [[10000, 0.005, 0.01]]
    assert preset[0].train_ratio == 512 and preset[0].total_steps == 16000


def test_efficient_preset_is_the_measured_ppo_imagination_recipe() -> None:
    preset = resolve_sb3(TrainRequest(preset="efficient", env=NEUTRAL), "ppo-imagination")
    measured = resolve_sb3(TrainRequest(preset="quick", env=NEUTRAL, steps=16000,
                                        overrides=SB3_MEASURED), "ppo-imagination")  # fmt: skip
    assert preset[0].to_dict() == measured[0].to_dict()
    assert preset[1].to_dict() == measured[1].to_dict()
    assert preset[0].wm_updates == 2 * preset[0].collect_steps == 800
    assert preset[1].lambda_schedule == []


@pytest.mark.parametrize("agent", ["ppo", "sac-imagination"])
def test_efficient_preset_refuses_the_agents_it_was_not_made_for(
    tmp_path: Path, agent: str, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = main(["train", "--agent", agent, "--preset", "efficient", "--no-progress",
               "--logdir", str(tmp_path / "run")])  # fmt: skip
    assert rc == 2
    err = capsys.readouterr().err
    assert "--preset efficient" in err and "dreamer and ppo-imagination" in err and agent in err
    assert "debug, quick, default" in err
    assert not (tmp_path / "run").exists()
