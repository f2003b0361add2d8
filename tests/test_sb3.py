"""The Stable-Baselines3 plug-in: imagination VecEnv, world-model callback, features
extractor, save/load (debug world-model sizes; each test takes a few seconds)."""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3 import PPO, SAC
from stable_baselines3.common.env_checker import check_env
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import VecMonitor

import mbrl_causal.envs  # noqa: F401
from mbrl_causal.sb3 import (
    CausalFeaturesExtractor,
    ImaginationEnv,
    ImaginationVecEnv,
    WorldModelCallback,
    imagined_returns,
    load_sb3,
    real_returns,
    save_sb3,
    scripted_policies,
)
from mbrl_causal.world_models.config import WorldModelConfig
from mbrl_causal.world_models.model import SequenceBatch, WorldModel

DEBUG = {"d_model": 32, "n_layers": 2, "n_heads": 2, "mlp_hidden": 64, "d_state": 4,
         "latent_dim": 8, "sparsity_warmup": 10}  # fmt: skip
NEUTRAL = "InterventionalPong-Neutral-v0"
RECOMMENDATION = "has an unconventional shape (neither an image, nor a 1D vector)"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _model(name: str = "spartan", discrete: bool = True, seed: int = 0, **kw: Any) -> WorldModel:
    torch.manual_seed(seed)
    cfg = WorldModelConfig(name=name, **{**DEBUG, **kw})
    return WorldModel(cfg, tuple(range(11)), 3 if discrete else 1, discrete)


def _starts(steps: int = 200, action_type: str = "discrete") -> np.ndarray:
    env = gym.make(NEUTRAL, action_type=action_type)
    env.action_space.seed(0)
    obs, _ = env.reset(seed=0)
    out = [obs]
    for _ in range(steps):
        obs, _, term, trunc, _ = env.step(env.action_space.sample())
        out.append(obs)
        if term or trunc:
            obs, _ = env.reset()
    return np.stack(out)


@pytest.fixture(scope="module")
def starts() -> np.ndarray:
    return _starts()


# ---------------------------------------------------------------------- the VecEnv
@pytest.mark.parametrize("action_type", ["discrete", "continuous"])
def test_check_env_and_spaces_equal_the_real_env(action_type: str) -> None:
    model = _model(discrete=action_type == "discrete")
    view = ImaginationEnv(model, _starts(50, action_type), horizon=8, seed=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(view, warn=True)
    other = [str(w.message) for w in caught if RECOMMENDATION not in str(w.message)]
    assert other == []
    real = gym.make(NEUTRAL, action_type=action_type)
    assert view.observation_space == real.observation_space
    assert view.action_space == real.action_space


def test_step_is_one_batched_model_call_with_truncation_at_horizon(starts: np.ndarray) -> None:
    model = _model()
    venv = ImaginationVecEnv(model, starts, num_envs=7, horizon=3, seed=0)
    calls: list[int] = []
    step = model.step

    def counted(latent: torch.Tensor, *args: Any) -> Any:
        calls.append(latent.shape[0])
        return step(latent, *args)

    model.step = counted  # type: ignore[method-assign]
    with torch.no_grad():
        model.cont_head[-1].bias.fill_(20.0)  # type: ignore[index]  # never terminates
    obs = venv.reset()
    assert obs.shape == (7, 4, 4) and obs.dtype == np.float32
    for t in range(3):
        obs, rew, done, infos = venv.step(np.zeros(7, np.int64))
        assert rew.shape == (7,) and rew.dtype == np.float32
        assert done.all() == (t == 2) and not done.any() == (t < 2)
    assert calls == [7, 7, 7]  # one call for all envs per step
    for info in infos:
        assert info["TimeLimit.truncated"] is True
        assert info["terminal_observation"].shape == (4, 4)
        assert np.abs(info["terminal_observation"]).max() <= 1.0
    assert venv.get_attr("elapsed_steps") == [0] * 7  # auto-reset after the truncation
    assert np.abs(obs).max() <= 1.0


def test_termination_comes_from_the_continuation_head(starts: np.ndarray) -> None:
    model = _model()
    with torch.no_grad():
        model.cont_head[-1].bias.fill_(-20.0)  # type: ignore[index]
    venv = ImaginationVecEnv(model, starts, num_envs=4, horizon=50)
    venv.reset()
    _, _, done, infos = venv.step(np.ones(4, np.int64))
    assert done.all()
    assert all(info["TimeLimit.truncated"] is False for info in infos)
    sampled = ImaginationVecEnv(model, starts, num_envs=4, horizon=50, termination="sample")
    sampled.reset()
    assert sampled.step(np.ones(4, np.int64))[2].all()
    with pytest.raises(ValueError, match="termination must be one of"):
        ImaginationVecEnv(model, starts, termination="never")


def test_seeding_regimes_and_sb3_accessors(starts: np.ndarray) -> None:
    model = _model()
    venv = ImaginationVecEnv(model, starts, num_envs=5, horizon=4)
    venv.seed(3)
    a = venv.reset()
    venv.seed(3)
    assert np.array_equal(a, venv.reset())
    venv.seed(4)
    assert not np.array_equal(a, venv.reset())
    assert venv.env_method("set_regime", 2, indices=[1, 3]) == [None, None]
    assert venv.get_attr("regime") == [0, 2, 0, 2, 0]
    token = torch.randn(model.config.d_model)
    venv.env_method("set_regime", token, indices=0)
    assert venv.get_attr("regime", [0, 1]) == [None, 2]
    assert torch.equal(venv.regime_tokens()[0], token)
    assert torch.equal(venv.regime_tokens()[1], model.regime_token(torch.tensor([2]))[0])
    venv.set_attr("regime", 5, indices=[4])
    assert venv.get_attr("regime")[4] == 5
    with pytest.raises(ValueError, match=r"not in the world model's codebook; allowed"):
        venv.set_regime(40)
    with pytest.raises(ValueError, match="shared by all imagined envs"):
        venv.set_attr("horizon", 9, indices=[0])
    venv.set_attr("horizon", 9)
    assert venv.get_attr("horizon") == [9] * 5
    with pytest.raises(AttributeError):
        venv.get_attr("no_such_attribute")
    assert not venv.has_attr("no_such_attribute")
    assert venv.env_is_wrapped(gym.Wrapper) == [False] * 5
    # an inferred regime: recall_regime on a batch
    batch = SequenceBatch(torch.from_numpy(starts[None, :9]), torch.zeros(1, 8, dtype=torch.long),
                          torch.zeros(1, 8), torch.ones(1, 8), torch.zeros(1, dtype=torch.long),
                          torch.zeros(1, 8, 6, 4, dtype=torch.bool))  # fmt: skip
    venv.set_regime(batch)
    assert all(r in model.regime_ids for r in venv.get_attr("regime"))


def test_regimes_follow_start_states_and_render(starts: np.ndarray) -> None:
    model = _model()
    regimes = np.arange(len(starts)) % 3
    venv = ImaginationVecEnv(model, starts, num_envs=6, horizon=2, start_regimes=regimes,
                             render_mode="rgb_array")  # fmt: skip
    venv.reset()
    assert set(venv.get_attr("regime")) <= {0, 1, 2}
    frame = venv.render()
    assert frame is not None and frame.ndim == 3 and frame.dtype == np.uint8
    with pytest.raises(ValueError, match="start_states must be"):
        venv.set_start_states(np.zeros((3, 4, 2)))


def test_s2ssm_state_is_carried_and_reset_per_env(starts: np.ndarray) -> None:
    model = _model("s2ssm")
    with torch.no_grad():  # episodes end only by truncation (an untrained continuation
        model.cont_head[-1].bias.fill_(20.0)  # head may end some at random)
    venv = ImaginationVecEnv(model, starts, num_envs=3, horizon=2, seed=0)
    venv.reset()
    _, _, done, _ = venv.step(np.zeros(3, np.int64))
    assert not done.any()
    state = venv._state
    assert state is not None and any(float(s.ssm.abs().sum()) > 0 for s in state)
    venv._elapsed[1] = 0  # env 1 is one step behind: only envs 0 and 2 truncate next step
    _, _, done, _ = venv.step(np.zeros(3, np.int64))
    assert done.tolist() == [True, False, True]
    m = 6  # N + 2 token series per env
    for s in venv._state:
        rows = s.ssm.view(3, m, *s.ssm.shape[1:])
        assert float(rows[0].abs().sum()) == 0.0 and float(rows[2].abs().sum()) == 0.0
        assert float(rows[1].abs().sum()) > 0.0


# ---------------------------------------------------------------------- SB3 algorithms
def test_ppo_and_sac_learn_in_imagination_and_act_in_the_real_env(starts: np.ndarray) -> None:
    venv = VecMonitor(ImaginationVecEnv(_model(), starts, num_envs=8, horizon=16, seed=0))
    ppo = PPO("MlpPolicy", venv, n_steps=32, batch_size=64, n_epochs=2, seed=0,
              policy_kwargs={"net_arch": [32]})  # fmt: skip
    before = [p.detach().clone() for p in ppo.policy.parameters()]
    ppo.learn(512)
    assert ppo.num_timesteps >= 512
    assert any(not torch.equal(a, b) for a, b in zip(before, ppo.policy.parameters(), strict=True))
    assert len(ppo.ep_info_buffer) > 0  # VecMonitor saw imagined episodes end
    real = gym.make(NEUTRAL)
    obs, _ = real.reset(seed=0)
    for _ in range(20):  # the policy steps the real env unchanged
        action, _ = ppo.predict(obs, deterministic=True)
        obs, *_ = real.step(action)

    cont = _model(discrete=False)
    cvenv = ImaginationVecEnv(cont, _starts(60, "continuous"), num_envs=8, horizon=16)
    sac = SAC("MlpPolicy", cvenv, learning_starts=64, batch_size=32, seed=0,
              policy_kwargs={"net_arch": [32]})  # fmt: skip
    sac.learn(400)
    assert sac.replay_buffer.size() * 8 >= 400 - 8
    real_c = gym.make(NEUTRAL, action_type="continuous")
    obs, _ = real_c.reset(seed=0)
    for _ in range(20):
        action, _ = sac.predict(obs, deterministic=True)
        assert real_c.action_space.contains(action)
        obs, *_ = real_c.step(action)


def _heldout(model: WorldModel, data: SequenceBatch) -> float:
    model.eval()
    with torch.no_grad():
        out = model(data.obs[:, :-1].float(), data.actions, data.regimes)
        return float((out.next_latent - data.obs[:, 1:]).square().mean())


def test_callback_fills_the_replay_and_lowers_world_model_error(tmp_path: Path) -> None:
    model = _model()
    env = make_vec_env(NEUTRAL, n_envs=2, seed=0, env_kwargs={"max_episode_steps": 60})
    cb = WorldModelCallback(model, train_freq=400, gradient_steps=60, batch_size=16, seq_len=8,
                            learning_starts=400, chunk_len=64, replay_dir=tmp_path / "replay",
                            seed=0)  # fmt: skip
    # held-out data: another seed, random actions
    test_cb = WorldModelCallback(_model(), seq_len=8, chunk_len=64,
                                 replay_dir=tmp_path / "test")  # fmt: skip
    test_env = make_vec_env(NEUTRAL, n_envs=2, seed=99)
    obs = test_env.reset()
    for _ in range(300):
        actions = np.random.default_rng(0).integers(0, 3, 2)
        new_obs, rew, done, infos = test_env.step(actions)
        test_cb.store(obs, actions, rew, done, infos, new_obs)
        obs = new_obs
    assert test_cb.replay is not None
    test_cb.replay.flush()
    heldout = test_cb.replay.sample(64, 8, np.random.default_rng(1))
    before = _heldout(model, heldout)
    ppo = PPO("MlpPolicy", env, n_steps=128, batch_size=64, n_epochs=1, seed=0,
              policy_kwargs={"net_arch": [16]})  # fmt: skip
    ppo.learn(1_600, callback=cb)
    after = _heldout(model, heldout)
    assert cb.replay is not None and cb.stored >= 1_600 and cb.updates >= 180
    assert after < 0.5 * before, (before, after)
    # truncation is not termination; every episode end is followed by a bridge step
    cb.replay.flush()
    trunc = np.concatenate([c["truncated"] for c in cb.replay.chunks])
    term = np.concatenate([c["terminated"] for c in cb.replay.chunks])
    valid = np.concatenate([c["valid"] for c in cb.replay.chunks])
    assert trunc.sum() >= 20 and not (term & trunc).any()
    assert (~valid).sum() == (term | trunc).sum()
    checked = 0
    for c in cb.replay.chunks:  # after a truncated step: its terminal obs, then the reset one
        for k in np.flatnonzero(c["truncated"][:-2]):
            assert not c["valid"][k + 1]
            assert not np.array_equal(c["objects"][k + 1], c["objects"][k + 2])
            assert np.array_equal(c["objects"][k + 2][:2, 1], [0.0, 0.0])  # paddles centred
            checked += 1
    assert checked >= 10
    assert "world_model/mse" in cb.last and np.isfinite(cb.last["world_model/loss"])
    # the start states for imagination come from the replay
    states, regimes = cb.start_states()
    assert states.shape[1:] == (4, 4) and set(regimes.tolist()) == {0}


def test_callback_with_an_off_policy_algorithm_logs_to_its_logger(tmp_path: Path) -> None:
    model = _model(discrete=False)
    env = make_vec_env(NEUTRAL, n_envs=1, seed=0, env_kwargs={"action_type": "continuous"})
    cb = WorldModelCallback(model, train_freq=100, gradient_steps=3, batch_size=4, seq_len=4,
                            learning_starts=100, chunk_len=32,
                            replay_dir=tmp_path / "r")  # fmt: skip
    sac = SAC("MlpPolicy", env, learning_starts=50, batch_size=16, seed=0, gradient_steps=1,
              policy_kwargs={"net_arch": [16]}, tensorboard_log=str(tmp_path / "tb"))  # fmt: skip
    sac.learn(220, callback=cb, log_interval=None)
    assert cb.stored == 220 and cb.updates == 6
    assert "world_model/mse" in sac.logger.name_to_value
    assert cb.replay is not None
    cb.replay.flush()
    actions = np.concatenate([c["action"] for c in cb.replay.chunks])
    assert actions.dtype == np.float32 and np.abs(actions).max() <= 1.0


# ---------------------------------------------------------------------- persistence
def test_save_and_load_give_identical_predictions(tmp_path: Path, starts: np.ndarray) -> None:
    model = _model("s2ssm")
    venv = ImaginationVecEnv(model, starts, num_envs=4, horizon=8)
    ppo = PPO("MlpPolicy", venv, n_steps=16, batch_size=32, n_epochs=1, seed=0)
    ppo.learn(64)
    zip_path, wm_path = save_sb3(ppo, tmp_path / "agent", model)
    assert zip_path.name == "agent.zip" and wm_path.name == "agent.world_model.pt"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["agent.world_model.pt", "agent.zip"]
    ppo2, model2 = load_sb3(tmp_path / "agent.zip", "PPO")
    obs = starts[:32]
    assert np.array_equal(ppo.predict(obs, deterministic=True)[0],
                          ppo2.predict(obs, deterministic=True)[0])  # fmt: skip
    model.eval()
    z, a = torch.from_numpy(starts[:16]), torch.zeros(16, dtype=torch.long)
    with torch.no_grad():
        o1, _ = model.step(z, a, torch.zeros(16, dtype=torch.long))
        o2, _ = model2.step(z, a, torch.zeros(16, dtype=torch.long))
    for x, y in zip(o1[:4], o2[:4], strict=True):
        assert torch.equal(x, y)
    with pytest.raises(ValueError, match="algorithm must be one of"):
        load_sb3(tmp_path / "agent.zip", "PPO2")
    with pytest.raises(ValueError, match="does not exist"):
        load_sb3(tmp_path / "nothing.zip", "PPO")


# ---------------------------------------------------------------------- features
@pytest.mark.parametrize("freeze", [False, True])
def test_features_extractor_trains_end_to_end_with_ppo(starts: np.ndarray, freeze: bool) -> None:
    model = _model()
    venv = ImaginationVecEnv(_model(seed=1), starts, num_envs=4, horizon=16)
    kwargs = {"features_extractor_class": CausalFeaturesExtractor,
              "features_extractor_kwargs": {"world_model": model, "freeze": freeze},
              "net_arch": [32]}  # fmt: skip
    ppo = PPO("MlpPolicy", venv, n_steps=64, batch_size=64, n_epochs=2, seed=0,
              policy_kwargs=kwargs)  # fmt: skip
    extractor = ppo.policy.features_extractor
    assert isinstance(extractor, CausalFeaturesExtractor)
    assert extractor.features_dim == 5 * model.config.d_model
    wm = extractor.world_model
    before = [p.detach().clone() for p in wm.parameters()]
    ppo.learn(256)
    changed = [not torch.equal(a, b) for a, b in zip(before, wm.parameters(), strict=True)]
    assert any(changed) != freeze
    assert all(torch.isfinite(p).all() for p in ppo.policy.parameters())
    obs = torch.from_numpy(starts[:8])
    values, log_prob, entropy = ppo.policy.evaluate_actions(obs, torch.zeros(8))
    assert entropy is not None
    loss = -log_prob.mean() + values.square().mean() - entropy.mean()
    assert torch.isfinite(loss)


def test_features_extractor_on_pixels_and_masks() -> None:
    model = _model(obs="pixels")
    env = make_vec_env(NEUTRAL, n_envs=1, seed=0,
                       env_kwargs={"obs_mode": "dict", "observe_regime": True})  # fmt: skip
    kwargs = {"features_extractor_class": CausalFeaturesExtractor,
              "features_extractor_kwargs": {"world_model": model}, "net_arch": [16]}  # fmt: skip
    ppo = PPO("MultiInputPolicy", env, n_steps=16, batch_size=16, n_epochs=1, seed=0,
              policy_kwargs=kwargs)  # fmt: skip
    ppo.learn(16)
    obs = env.reset()
    action, _ = ppo.predict(obs, deterministic=True)
    assert action.shape == (1,)
    with pytest.raises(ValueError, match="needs the keys"):
        pixels = gym.spaces.Box(0, 255, (32, 32, 3), np.uint8)
        CausalFeaturesExtractor(gym.spaces.Dict({"pixels": pixels}), model)


def test_importing_the_package_does_not_import_sb3() -> None:
    import subprocess
    import sys

    code = ("import sys, mbrl_causal, mbrl_causal.agents, mbrl_causal.agents.sb3_agents; "
            "sys.exit('stable_baselines3' in sys.modules)")  # fmt: skip
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


# ---------------------------------------------------------------------- policy contrast
def test_scripted_tracking_matches_the_env_tracking_policy() -> None:
    from mbrl_causal.envs.policies import TrackingPolicy

    for action_type in ("discrete", "continuous"):
        env = gym.make(NEUTRAL, action_type=action_type)
        pols = scripted_policies(env.action_space, seed=0)
        reference = TrackingPolicy(env)
        obs, _ = env.reset(seed=3)
        moves = set()
        for _ in range(300):
            ours = pols["tracking"](obs[None])[0]
            theirs = reference(obs)
            np.testing.assert_allclose(ours, theirs, atol=1e-5)
            moves.add(str(np.round(ours, 3)))
            obs, _, term, trunc, _ = env.step(theirs)
            if term or trunc:
                obs, _ = env.reset()
        assert len(moves) >= 3  # it moved both ways and stood still (or varied its speed)
        assert pols["stay"](obs[None]).tolist() in ([0], [[0.0]])
        assert env.action_space.contains(pols["random"](obs[None])[0])
    with pytest.raises(ValueError, match="Discrete\\(3\\) or Box of shape \\(1,\\)"):
        scripted_policies(gym.spaces.Box(-1.0, 1.0, (2,)))


def test_imagined_returns_ranks_policies_by_the_reward_head(starts: np.ndarray) -> None:
    model = _model()
    with torch.no_grad():
        model.cont_head[-1].bias.fill_(20.0)  # type: ignore[index]  # never terminates
    step = model.step

    def paid_for_action_2(latent: torch.Tensor, action: torch.Tensor, *args: Any) -> Any:
        out, state = step(latent, action, *args)  # the model's own dynamics
        return out._replace(reward=(action == 2).float()[:, None]), state

    model.step = paid_for_action_2  # type: ignore[method-assign]
    always_2 = {"up": lambda obs: np.full(len(obs), 2)}
    res = imagined_returns(model, starts, {**always_2, **scripted_policies(gym.spaces.Discrete(3))},
                           num_envs=16, horizon=5, rounds=3)  # fmt: skip
    assert res["up"] == {"return_mean": 5.0, "return_std": 0.0, "episodes": 48, "length_mean": 5.0}
    assert res["stay"]["return_mean"] == 0.0
    assert 0.5 < res["random"]["return_mean"] < 3.0  # 5/3 expected
    assert res["up"]["return_mean"] > res["random"]["return_mean"] > res["stay"]["return_mean"]


def test_imagined_returns_share_start_states_across_policies(starts: np.ndarray) -> None:
    model = _model(seed=1)  # untrained: its reward head depends on the state
    with torch.no_grad():
        model.cont_head[-1].bias.fill_(20.0)  # type: ignore[index]
    stay = scripted_policies(gym.spaces.Discrete(3))["stay"]
    res = imagined_returns(model, starts, {"a": stay, "b": stay}, num_envs=8, horizon=4)
    assert res["a"] == res["b"]  # the same starts for both policies
    assert res["a"]["return_std"] > 0  # and different starts within a round
    other = imagined_returns(model, starts, {"a": stay}, num_envs=8, horizon=4, seed=5)
    assert other["a"]["return_mean"] != res["a"]["return_mean"]
    with pytest.raises(ValueError, match="rounds must be an int >= 1"):
        imagined_returns(model, starts, {"a": stay}, rounds=0)
    with pytest.raises(ValueError, match="policies is empty"):
        imagined_returns(model, starts, {})


def test_real_returns_start_every_policy_from_the_same_state() -> None:
    env = gym.make(NEUTRAL)
    pols = scripted_policies(env.action_space, seed=0)
    res = real_returns(env, {"stay": pols["stay"], "stay_too": pols["stay"],
                             "tracking": pols["tracking"]}, windows=60, horizon=32)  # fmt: skip
    assert res["stay"] == res["stay_too"]  # same snapshots, random stream included
    assert res["stay"]["episodes"] == 60 and 1 <= res["stay"]["length_mean"] <= 32
    # tracking returns more balls than a paddle that never moves
    assert res["tracking"]["return_mean"] > res["stay"]["return_mean"]
    with pytest.raises(ValueError, match="windows must be an int >= 1"):
        real_returns(env, windows=0)


def test_imagined_returns_count_each_envs_first_episode_only(starts: np.ndarray) -> None:
    model = _model()
    step = model.step

    def half_end_at_once(latent: torch.Tensor, action: torch.Tensor, *args: Any) -> Any:
        out, state = step(latent, action, *args)
        b = latent.shape[0]
        cont = torch.where(torch.arange(b) % 2 == 0, -20.0, 20.0)[:, None]  # even envs end
        return out._replace(reward=torch.ones(b, 1), cont_logit=cont), state

    model.step = half_end_at_once  # type: ignore[method-assign]
    res = imagined_returns(model, starts, {"stay": lambda o: np.zeros(len(o), np.int64)},
                           num_envs=8, horizon=5, rounds=2)  # fmt: skip
    # even envs: 1 step (reward 1) then restart, not counted; odd envs: 5 steps
    assert res["stay"] == {"return_mean": 3.0, "return_std": 2.0, "episodes": 16,
                           "length_mean": 3.0}  # fmt: skip


def test_real_returns_leave_the_env_where_random_play_left_it() -> None:
    """The windows do not move the env: two runs with different policies in the windows
    end in the same state (that of the random play between the windows)."""
    ends = []
    for policy in (scripted_policies(gym.spaces.Discrete(3))["tracking"],
                   lambda o: np.zeros(len(o), np.int64)):  # fmt: skip
        env = gym.make(NEUTRAL)
        real_returns(env, {"p": policy}, windows=5, horizon=8, seed=2)
        ends.append(pickle.dumps(env.unwrapped.get_state()))  # type: ignore[attr-defined]
    assert ends[0] == ends[1]
