"""Component tests of the agent: the on-disk replay, lambda-returns and the return
normaliser, the surprise detector and its bookkeeping, recall-or-fit adaptation on a toy
switch, and the actor-critic's refusal of a NaN update.

Every random draw is seeded, torch runs on one thread and every file goes under pytest's
``tmp_path``; the file runs in seconds on a CPU.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from typing import Any

import numpy as np
import pytest
import torch

from mbrl_causal.agents.adaptation import Adapter, DetectionStats, SurpriseDetector
from mbrl_causal.agents.config import AgentConfig
from mbrl_causal.agents.dreamer.actor_critic import ActorCritic, RealSequences
from mbrl_causal.agents.dreamer.losses import ReturnNormalizer, lambda_returns
from mbrl_causal.agents.replay import Replay
from mbrl_causal.world_models import WorldModel, WorldModelConfig
from mbrl_causal.world_models.adaptation import regime_errors
from mbrl_causal.world_models.config import preset
from mbrl_causal.world_models.data import TransitionData, collect
from mbrl_causal.world_models.training import train

torch.set_num_threads(1)


# --------------------------------------------------------------------------------------
# 1. Replay
# --------------------------------------------------------------------------------------
ENVS, CHUNK, N_OBJ, T = 2, 16, 3, 4


def code(env: int, step: int) -> int:
    """Every stored value of step ``step`` of sub-env ``env`` (decodable from a sample)."""
    return 100 * env + step


class Stream:
    """Hand-made streams of two sub-envs with episode ends, autoresets and switches.

    Sub-env 0: terminated at 5 (autoreset 6), invalid at 13, truncated at 20 (autoreset
    21), regime 0 -> 1 at 30, token 3 -> 4 at 40 (mid-episode, on purpose). Sub-env 1:
    terminated at 10 (autoreset 11), token 3 -> 5 at 25, regime 0 -> 2 at 35, terminated
    at 47 (the last step of its third chunk; the autoreset 48 opens the fourth).
    """

    def __init__(self, steps: int = 56) -> None:
        self.steps = steps
        shape = (ENVS, steps + 8)  # room for continuing the streams
        self.term, self.trunc = np.zeros(shape, bool), np.zeros(shape, bool)
        self.valid = np.ones(shape, bool)
        self.regime = np.zeros(shape, np.int64)
        self.token = np.full(shape, 3, np.int64)
        for env, step in ((0, 5), (1, 10), (1, 47)):
            self.term[env, step], self.valid[env, step + 1] = True, False
        self.trunc[0, 20], self.valid[0, 21] = True, False
        self.valid[0, 13] = False  # a lone invalid step (no episode end before it)
        self.regime[0, 30:], self.token[0, 40:] = 1, 4
        self.token[1, 25:], self.regime[1, 35:] = 5, 2
        self.graph = np.random.default_rng(0).random((*shape, N_OBJ + 2, N_OBJ)) < 0.5

    def add(self, replay: Replay, start: int, stop: int) -> None:
        def objects(k: int) -> np.ndarray:
            return np.stack([np.full((N_OBJ, 4), code(i, k), np.float32) for i in range(ENVS)])

        for k in range(start, stop):
            codes = np.array([code(i, k) for i in range(ENVS)])
            replay.add(
                {"objects": objects(k)},
                {"objects": objects(k + 1)},
                codes.astype(np.int64),
                codes.astype(np.float32),
                self.term[:, k],
                self.trunc[:, k],
                self.valid[:, k],
                self.regime[:, k],
                self.token[:, k],
                self.graph[:, k],
            )

    def expected_windows(self, stop: int) -> set[tuple[int, int]]:
        """(env, start) of every window of T steps inside one chunk of steps [0, stop)
        whose steps are all valid, with no episode end before its last step and with one
        regime and one token (brute force, step by step)."""
        out = set()
        for i in range(ENVS):
            for lo in range(0, stop, CHUNK):
                hi = min(lo + CHUNK, stop)
                for s in range(lo, hi - T + 1):
                    steps = range(s, s + T)
                    if not all(self.valid[i, k] for k in steps):
                        continue
                    if any(self.term[i, k] or self.trunc[i, k] for k in steps[:-1]):
                        continue
                    if len({self.regime[i, k] for k in steps}) > 1:
                        continue
                    if len({self.token[i, k] for k in steps}) > 1:
                        continue
                    out.add((i, s))
        return out


def decode(batch: Any) -> list[tuple[int, int]]:
    """(env, start) of each window of a sampled batch."""
    first = batch.obs[:, 0, 0, 0].long().tolist()
    return [(c // 100, c % 100) for c in first]


def test_replay_samples_only_windows_inside_one_episode_and_regime(tmp_path: Any) -> None:
    stream = Stream()
    replay = Replay(tmp_path / "replay", ENVS, CHUNK, capacity=10_000)
    stream.add(replay, 0, stream.steps)
    # only finished chunks (3 per sub-env) are sampleable before a flush
    assert replay.size == 3 * CHUNK * ENVS
    assert replay.windows(T) == len(stream.expected_windows(3 * CHUNK))
    replay.flush()
    assert replay.size == stream.steps * ENVS
    expected = stream.expected_windows(stream.steps)
    assert replay.windows(T) == len(expected)

    batch = replay.sample(4000, T, np.random.default_rng(0))
    drawn = decode(batch)
    assert set(drawn) <= expected  # never across an end, an autoreset, a switch or a chunk
    assert set(drawn) == expected  # and every valid window can be drawn
    # the windows that end exactly at an episode end are among them
    assert {(0, 2), (1, 44)} <= expected

    # time alignment: T + 1 observations, T actions and per-step fields of the stream
    assert batch.obs.shape == (4000, T + 1, N_OBJ, 4)
    assert batch.actions.shape == batch.rewards.shape == batch.conts.shape == (4000, T)
    for b, (i, s) in enumerate(drawn[:300]):
        steps = np.arange(s, s + T)
        codes = code(i, 0) + np.arange(s, s + T + 1)
        obs = torch.from_numpy(codes.astype(np.float32))[:, None, None].expand(-1, N_OBJ, 4)
        assert torch.equal(batch.obs[b], obs)
        assert batch.actions[b].tolist() == codes[:-1].tolist()
        assert batch.rewards[b].tolist() == codes[:-1].astype(float).tolist()
        assert batch.conts[b].tolist() == (1.0 - stream.term[i, steps]).tolist()
        assert torch.equal(batch.graphs[b], torch.from_numpy(stream.graph[i, steps]))
        assert int(batch.regimes[b]) == stream.token[i, s]  # the token, not the regime
    ends = [b for b, w in enumerate(drawn) if w == (0, 2)]
    assert ends and batch.conts[ends[0]].tolist() == [1.0, 1.0, 1.0, 0.0]


def test_replay_capacity_drops_the_oldest_chunk_files(tmp_path: Any) -> None:
    stream = Stream()
    folder = tmp_path / "replay"
    replay = Replay(folder, ENVS, CHUNK, capacity=40)
    stream.add(replay, 0, 3 * CHUNK)
    on_disk = sorted(f.name for f in folder.glob("*.npz"))
    assert on_disk == sorted(replay.names) and len(on_disk) == 2
    assert replay.size <= 40
    for name in on_disk:  # the files left hold the newest chunk of each sub-env
        with np.load(folder / name) as z:
            steps = z["action"] % 100
            assert steps.tolist() == list(range(2 * CHUNK, 3 * CHUNK))
    starts = decode(replay.sample(500, T, np.random.default_rng(1)))
    assert min(s for _, s in starts) >= 2 * CHUNK


def _assert_same_batch(a: Any, b: Any) -> None:
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x, y)


def test_replay_state_round_trip_and_later_files_deleted(tmp_path: Any) -> None:
    stream = Stream()
    folder = tmp_path / "replay"
    replay = Replay(folder, ENVS, CHUNK, capacity=10_000)
    stream.add(replay, 0, 40)  # 2 full chunks and an unfinished one per sub-env
    replay.flush()
    state = replay.state_dict()
    assert len(state["names"]) == 6
    before = replay.sample(64, T, np.random.default_rng(7))
    stream.add(replay, 40, 64)  # after the checkpoint: 2 more chunk files are written
    later = {f.name for f in folder.glob("*.npz")} - set(state["names"])
    assert len(later) == 2

    fresh = Replay(folder, ENVS, CHUNK, capacity=10_000)
    fresh.load_state_dict(state)
    assert {f.name for f in folder.glob("*.npz")} == set(state["names"])
    assert fresh.size == 40 * ENVS and fresh.windows(T) == len(stream.expected_windows(40))
    _assert_same_batch(before, fresh.sample(64, T, np.random.default_rng(7)))
    # the resumed replay goes on writing new files without overwriting the loaded ones
    stream.add(fresh, 40, 56)
    assert {f.name for f in folder.glob("*.npz")} >= set(state["names"])
    assert len(list(folder.glob("*.npz"))) == 8


def test_replay_missing_chunk_file_is_a_clear_error(tmp_path: Any) -> None:
    stream = Stream()
    folder = tmp_path / "replay"
    replay = Replay(folder, ENVS, CHUNK, capacity=10_000)
    stream.add(replay, 0, 40)
    replay.flush()
    state = replay.state_dict()
    gone = state["names"][1]
    (folder / gone).unlink()
    left = {f.name for f in folder.glob("*.npz")}
    with pytest.raises(ValueError, match=rf"lacks 1 chunk file.*{gone}"):
        Replay(folder, ENVS, CHUNK, capacity=10_000).load_state_dict(state)
    assert {f.name for f in folder.glob("*.npz")} == left  # a failed load deletes nothing


def test_replay_sampling_without_windows_is_a_clear_error(tmp_path: Any) -> None:
    replay = Replay(tmp_path / "replay", ENVS, CHUNK, capacity=10_000)
    with pytest.raises(ValueError, match="no window of 4 steps"):
        replay.sample(8, T, np.random.default_rng(0))
    Stream().add(replay, 0, CHUNK)
    assert replay.windows(T) > 0
    with pytest.raises(ValueError, match=f"no window of {CHUNK + 1} steps"):
        replay.sample(8, CHUNK + 1, np.random.default_rng(0))  # longer than a chunk


# --------------------------------------------------------------------------------------
# 2. lambda-returns
# --------------------------------------------------------------------------------------
def test_lambda_returns_by_hand() -> None:
    # H = 2, three columns: conts all 1; c_1 = 0 (the first step ends the episode);
    # c_2 = 0. gamma = 0.5, lambda = 0.5, r = (1, 2), v = (0, 4, 8).
    r = torch.tensor([[1.0, 1.0, 1.0], [2.0, 2.0, 2.0]])
    c = torch.tensor([[1.0, 0.0, 1.0], [1.0, 1.0, 0.0]])
    v = torch.tensor([[0.0] * 3, [4.0] * 3, [8.0] * 3])
    out = lambda_returns(r, c, v, gamma=0.5, lambda_=0.5)
    # column 0: R_1 = 2 + .5 (.5 * 8 + .5 * 8) = 6; R_0 = 1 + .5 (.5 * 4 + .5 * 6) = 3.5
    # column 1: R_1 = 6; R_0 = 1 (c_1 = 0 cuts the bootstrap and everything after)
    # column 2: R_1 = 2 (c_2 = 0); R_0 = 1 + .5 (.5 * 4 + .5 * 2) = 2.5
    assert torch.allclose(out, torch.tensor([[3.5, 1.0, 2.5], [6.0, 6.0, 2.0]]))

    r = torch.tensor([[1.0], [2.0], [3.0]])
    c = torch.ones(3, 1)
    v = torch.tensor([[10.0], [20.0], [30.0], [40.0]])
    # lambda = 0: one-step TD targets r_{t+1} + gamma v_{t+1}
    td = lambda_returns(r, c, v, gamma=0.5, lambda_=0.0)
    assert torch.allclose(td[:, 0], torch.tensor([1 + 10.0, 2 + 15.0, 3 + 20.0]))
    # lambda = 1: discounted rewards to the end plus gamma^(H - t) v_H
    mc = lambda_returns(r, c, v, gamma=0.5, lambda_=1.0)
    expect = [1 + 0.5 * 2 + 0.25 * 3 + 0.125 * 40, 2 + 0.5 * 3 + 0.25 * 40, 3 + 0.5 * 40]
    assert torch.allclose(mc[:, 0], torch.tensor(expect))
    # ... and the intermediate values do not enter it
    v2 = v.clone()
    v2[:3] = -100.0
    assert torch.allclose(lambda_returns(r, c, v2, gamma=0.5, lambda_=1.0), mc)


def test_lambda_returns_shape_errors() -> None:
    r, c = torch.zeros(3, 2), torch.ones(3, 2)
    with pytest.raises(ValueError, match=r"values \(H \+ 1, B\)"):
        lambda_returns(r, c, torch.zeros(3, 2), 0.9, 0.95)  # values need H + 1 rows
    with pytest.raises(ValueError, match="shape"):
        lambda_returns(r, torch.ones(3, 1), torch.zeros(4, 2), 0.9, 0.95)


# --------------------------------------------------------------------------------------
# 3. Return normaliser
# --------------------------------------------------------------------------------------
def spread_of(a: float) -> torch.Tensor:
    """Returns 0, a, 2a, ..., 100a shuffled: P5 = 5a, P95 = 95a, spread 90a."""
    return (torch.arange(101.0) * a)[
        torch.randperm(101, generator=torch.Generator().manual_seed(0))
    ]


def test_return_normalizer_scale_is_floored_ema_of_the_spread() -> None:
    n = ReturnNormalizer(decay=0.9)
    assert n.scale == 1.0  # nothing seen yet
    assert n.update(spread_of(0.1)) == pytest.approx(9.0)  # first batch: the spread itself
    # second: 0.9 * 9 + 0.1 * 18
    assert n.update(spread_of(0.2).reshape(1, 101)) == pytest.approx(9.9)

    small = ReturnNormalizer(decay=0.5)
    assert small.update(spread_of(0.001)) == 1.0  # spread 0.09: never blown up
    assert small.range == pytest.approx(0.09)
    # the floor is on the scale, not on the EMA: 0.5 * 0.09 + 0.5 * 3.6
    assert small.update(spread_of(0.04)) == pytest.approx(1.845)


def test_return_normalizer_state_round_trip() -> None:
    n = ReturnNormalizer(decay=0.9)
    n.update(spread_of(0.1))
    n.update(spread_of(0.3))
    m = ReturnNormalizer(decay=0.9)
    m.load_state_dict(copy.deepcopy(n.state_dict()))
    assert m.scale == n.scale and m.scale > 1.0
    assert m.update(spread_of(0.05)) == n.update(spread_of(0.05))


# --------------------------------------------------------------------------------------
# 4. Surprise detector and detection bookkeeping
# --------------------------------------------------------------------------------------
def lognormal(rng: np.random.Generator, mu: float | np.ndarray, n: int) -> np.ndarray:
    return rng.lognormal(mu, 0.5, n)


@pytest.mark.parametrize("seed", [0, 1])
def test_surprise_detector_is_quiet_on_a_stationary_stream(seed: int) -> None:
    rng = np.random.default_rng(seed)
    det = SurpriseDetector(4, threshold=8.0, drift=1.0, warmup=200)
    alarms = sum(int(det.update(lognormal(rng, -5.0, 4)).sum()) for _ in range(20_000))
    assert alarms == 0


def test_surprise_detector_fires_soon_after_a_shift_per_stream() -> None:
    rng = np.random.default_rng(3)
    det = SurpriseDetector(2, threshold=8.0, drift=1.0, warmup=200)
    for _ in range(1_000):
        assert not det.update(lognormal(rng, -5.0, 2)).any()
    # stream 1's error level jumps by e^2 (4 standard deviations of the log error)
    fired = []
    for k in range(1, 51):
        alarm = det.update(lognormal(rng, np.array([-5.0, -3.0]), 2))
        assert not alarm[0]  # stream 0 is not disturbed by stream 1
        if alarm[1]:
            fired.append(k)
    assert fired and fired[0] <= 5, fired
    assert fired == fired[:1]  # one alarm; then the statistics are learned anew
    # at the new level the detector stays quiet (a reset, not a stuck alarm)
    for _ in range(3_000):
        assert not det.update(lognormal(rng, np.array([-5.0, -3.0]), 2)).any()
    # one-sided: a drop of the error is no alarm
    for _ in range(200):
        assert not det.update(lognormal(rng, np.array([-7.0, -3.0]), 2)).any()


def test_surprise_detector_skips_inactive_streams() -> None:
    rng = np.random.default_rng(4)
    det = SurpriseDetector(2, threshold=8.0, drift=1.0, warmup=50)
    for _ in range(500):
        det.update(lognormal(rng, -5.0, 2))
    control = copy.deepcopy(det)
    state = det.state_dict()
    inactive = np.array([False, True])
    for _ in range(100):  # stream 0 reports huge errors while inactive (autoreset steps)
        assert not det.update(np.array([1.0, lognormal(rng, -5.0, 1)[0]]), inactive).any()
    assert det.state_dict()["count"][0] == state["count"][0]
    for key in ("mean", "m2", "g"):
        assert det.state_dict()[key][0] == state[key][0], key
    for _ in range(200):
        assert not det.update(lognormal(rng, -5.0, 2)).any()
    # the same error on an active stream alarms at once (z = 10 standard deviations)
    assert control.update(np.array([1.0, math.exp(-5.0)]))[0]


def test_detection_stats_count_delays_false_alarms_and_misses() -> None:
    s = DetectionStats(num_envs=2, window=10)
    s.switch(0, 100)
    assert s.alarm(0, 103) == 3  # detected 3 steps after the switch
    assert s.alarm(0, 104) is None  # nothing pending: false alarm
    s.switch(1, 105)
    assert s.alarm(0, 106) is None  # stream 1's switch does not excuse stream 0
    s.expire(115)  # 10 steps: still within the window
    assert s.alarm(1, 115) == 10
    s.switch(0, 200)
    s.switch(0, 202)  # a second switch before the first was detected: that one is missed
    assert s.alarm(0, 203) == 1
    s.switch(1, 300)
    assert s.alarm(1, 311) is None  # 11 steps: too late, a false alarm...
    s.expire(311)  # ... and the switch is missed
    s.switch(0, 400)
    s.expire(410)
    s.expire(411)
    assert s.summary() == {
        "delay_mean": pytest.approx((3 + 10 + 1) / 3),
        "delays": [3, 10, 1],
        "false_alarms": 3,
        "missed": 3,
        "switches": 6,
    }
    assert s.pending == {}


# --------------------------------------------------------------------------------------
# 5. Recall-or-fit adaptation on a toy switch (InterventionalPong, gravity vs inverted)
# --------------------------------------------------------------------------------------
PONG = "InterventionalPong-v0"
GRAVITY, INVERTED = 1, 6
SLOTS = 8  # codebook slots = env regime ids (as in the agent: ids 0..MAX_SLOTS - 1)
FREE = 3  # an unused (untrained) slot
K = 32


@pytest.fixture(scope="module")
def pong_model() -> tuple[WorldModel, TransitionData, float]:
    """A debug-sized SPARTAN trained 300 steps on gravity and controls-inverted data.

    Seeded (seed 0; recall was also checked on seeds 0-10 with the same recipe). The
    sparsity Lagrangian is held off (``sparsity_warmup`` beyond the train steps): with the
    debug preset's warm-up of 10 steps, tau is set from the untrained model's error and
    the Lagrangian closes the regime token's edges within 300 steps, so every token then
    predicts the same (the recall would be a tie).
    """
    torch.manual_seed(0)
    data = collect(PONG, [GRAVITY, INVERTED], 3_000, seed=0, num_envs=4)
    held = collect(PONG, [GRAVITY, INVERTED], 800, seed=100, num_envs=2)
    cfg = WorldModelConfig(**{**preset("debug")[0], "sparsity_warmup": 10**4})
    model = WorldModel(cfg, tuple(range(SLOTS)))
    figures = train(model, data.sampler(4, 32, np.random.default_rng(0)), 300, lr=1e-2, seed=0)
    model.eval()
    return model, held, figures["world_model/mse"]


def gather(adapter: Adapter, held: TransitionData, row: int) -> Any:
    """Feed K consecutive valid transitions of a held-out row through the adapter."""
    adapter.trigger(0)
    assert adapter.pending(0)
    steps = np.flatnonzero(held.valid[row])[10 : 10 + K]
    done = [
        adapter.add(0, held.objects[row, k], held.actions[row, k], held.objects[row, k + 1])
        for k in steps
    ]
    assert done == [False] * (K - 1) + [True]  # True once K are there
    batch = adapter.batch(0)
    assert not adapter.pending(0)
    assert batch.obs.shape == (K, 2, held.n_objects, 4) and batch.actions.shape == (K, 1)
    assert torch.equal(batch.obs[:, 1], torch.from_numpy(held.objects[row, steps + 1]))
    return batch


def test_adaptation_on_a_toy_switch_recalls_the_right_token(
    pong_model: tuple[WorldModel, TransitionData, float],
) -> None:
    model, held, reference = pong_model
    code = model.codebook.weight.detach().clone()
    adapter = Adapter(1, K, fit_steps=20, tolerance=2.0)
    assert not adapter.add(0, None, None, None)  # not gathering: nothing is kept
    assert sorted(set(held.regimes.tolist())) == [GRAVITY, INVERTED]
    for row, regime in enumerate(held.regimes.tolist()):
        batch = gather(adapter, held, row)
        kind, slot, best = adapter.decide(
            model, batch, [GRAVITY, INVERTED], None, reference, seed=0
        )
        errors = regime_errors(model, batch)
        assert (kind, slot) == ("recall", regime), (row, errors)
        assert best == pytest.approx(errors[regime])
        # with no free slot, the best *known* slot is recalled whatever its error
        other = GRAVITY if regime == INVERTED else INVERTED
        assert adapter.decide(model, batch, [other], None, reference, seed=0) == (
            "recall",
            other,
            pytest.approx(errors[other]),
        )
    assert torch.equal(model.codebook.weight, code)  # recalling changes no token


def test_adaptation_fits_a_new_token_into_the_free_slot(
    pong_model: tuple[WorldModel, TransitionData, float],
) -> None:
    model, held, reference = pong_model
    model = copy.deepcopy(model)
    row = int(np.flatnonzero(held.regimes == INVERTED)[0])
    batch = gather(Adapter(1, K, 1, 1.0), held, row)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    known = [GRAVITY, INVERTED]

    # within tolerance: recalled even with a free slot, no token changes
    lax = Adapter(1, K, fit_steps=20, tolerance=1e9)
    assert lax.decide(model, batch, known, FREE, reference, seed=0)[:2] == ("recall", INVERTED)
    assert torch.equal(model.codebook.weight, weights["codebook.weight"])

    strict = Adapter(1, K, fit_steps=20, tolerance=1e-9)
    kind, slot, best = strict.decide(model, batch, known, FREE, reference, seed=0)
    assert (kind, slot) == ("new", FREE)
    assert best == pytest.approx(regime_errors(model, batch)[INVERTED])  # of the best known
    new = model.codebook.weight.detach()
    old = weights["codebook.weight"]
    others = [s for s in range(SLOTS) if s != FREE]
    assert torch.equal(new[others], old[others])  # only the free slot's row is written
    assert not torch.equal(new[FREE], old[FREE])
    for k, v in model.state_dict().items():  # the world model itself is frozen
        if k != "codebook.weight":
            assert torch.equal(v, weights[k]), k
    # the fitted token (started at the best known one) did not wander off: it explains
    # the batch better than the other known regime's token
    errors = regime_errors(model, batch)
    assert errors[FREE] < errors[GRAVITY], errors


# --------------------------------------------------------------------------------------
# 6. Actor-critic: a NaN update is refused
# --------------------------------------------------------------------------------------
def actor_critic_setup() -> tuple[WorldModel, ActorCritic, torch.Tensor, torch.Tensor]:
    cfg = AgentConfig.preset("debug")
    torch.manual_seed(0)
    model = WorldModel(WorldModelConfig(**preset("debug")[0]), tuple(range(4)))
    ac = ActorCritic(4 * model.latent_dim + model.config.d_model, 3, True, cfg)
    latents = torch.rand(cfg.imag_starts, 4, 4) * 2 - 1
    tokens = model.codebook.weight[torch.arange(cfg.imag_starts) % 4].detach()
    ac.update(model, latents, tokens, torch.Generator().manual_seed(0))  # optimisers in use
    return model, ac, latents, tokens


def snapshot(ac: ActorCritic) -> dict[str, Any]:
    return copy.deepcopy(
        {
            "modules": ac.state_dict(),
            "actor": ac.actor_opt.state_dict(),
            "critic": ac.critic_opt.state_dict(),
        }
    )


def assert_unchanged(ac: ActorCritic, before: dict[str, Any]) -> None:
    after = snapshot(ac)
    # actor, critic and slow critic, and both optimisers' moments and step counts
    same = {"rtol": 0.0, "atol": 0.0, "equal_nan": True}
    torch.testing.assert_close(after["modules"], before["modules"], **same)
    torch.testing.assert_close(after["actor"]["state"], before["actor"]["state"], **same)
    torch.testing.assert_close(after["critic"]["state"], before["critic"]["state"], **same)
    assert before["actor"]["state"] and before["critic"]["state"]  # (they were in use)


def test_actor_critic_update_refuses_nan_reward_and_keeps_weights() -> None:
    model, ac, latents, tokens = actor_critic_setup()
    before = snapshot(ac)
    with torch.no_grad():
        model.reward_head[-1].weight.fill_(math.nan)
    with pytest.raises(FloatingPointError, match="loss term 'actor' is nan"):
        ac.update(model, latents, tokens, torch.Generator().manual_seed(1))
    assert_unchanged(ac, before)
    # the world model was frozen for the rollout only: its flags are restored
    assert all(p.requires_grad for p in model.parameters())


def test_actor_critic_update_refuses_nan_critic_term_before_any_step() -> None:
    model, ac, latents, tokens = actor_critic_setup()
    with torch.no_grad():  # only the critic's regulariser (toward the slow critic) is NaN
        ac.slow_critic[-1].weight.fill_(math.nan)
    before = snapshot(ac)
    with pytest.raises(FloatingPointError, match="loss term 'critic' is nan"):
        ac.update(model, latents, tokens, torch.Generator().manual_seed(1))
    assert_unchanged(ac, before)  # the actor's (finite) step is not taken either


@pytest.mark.parametrize("part", ["actor", "critic"])
def test_actor_critic_update_refuses_a_non_finite_gradient(part: str) -> None:
    model, ac, latents, tokens = actor_critic_setup()
    before, norm = snapshot(ac), dict(ac.normalizer.state_dict())
    param = next(getattr(ac, part).parameters())
    hook = param.register_hook(lambda g: torch.full_like(g, math.inf))
    with pytest.raises(FloatingPointError, match=rf"{part} gradient is (inf|nan)"):
        ac.update(model, latents, tokens, torch.Generator().manual_seed(1))
    hook.remove()
    assert_unchanged(ac, before)
    assert ac.normalizer.state_dict() == norm


def test_actor_critic_refused_update_leaves_the_return_normalizer_intact() -> None:
    """A refused update must not feed its NaN returns to the return normaliser: its EMA
    would stay NaN for good and ``scale`` (max(1, nan) = 1) would silently stop
    normalising every later update."""
    model, ac, latents, tokens = actor_critic_setup()
    before = dict(ac.normalizer.state_dict())
    with torch.no_grad():
        model.reward_head[-1].weight.fill_(math.nan)
    with pytest.raises(FloatingPointError):
        ac.update(model, latents, tokens, torch.Generator().manual_seed(1))
    assert ac.normalizer.state_dict() == before


# --------------------------------------------------------------------------------------
# 7. Actor-critic: the replay value loss (critic regressed on real lambda-returns)
# --------------------------------------------------------------------------------------
def test_replay_returns_target_is_the_real_lambda_return_from_the_slow_critic() -> None:
    model, ac, _, _ = actor_critic_setup()
    cfg = ac.config
    b, t = 3, 5
    feats = torch.randn(b, t + 1, 4 * model.latent_dim + model.config.d_model)
    rewards = torch.randn(b, t)
    conts = torch.ones(b, t)
    conts[1, 2] = 0.0  # sequence 1 ends at step 3
    values, target = ac.replay_returns(RealSequences(feats, rewards, conts))
    assert values.shape == target.shape == (t, b)
    with torch.no_grad():
        slow = ac.slow_critic(feats).squeeze(-1)  # (B, T + 1)
    for i in range(b):  # backwards by hand: R_t = r + g c ((1 - l) v' + l R')
        last = slow[i, t]
        for s in reversed(range(t)):
            boot = (1 - cfg.lambda_) * slow[i, s + 1] + cfg.lambda_ * last
            last = rewards[i, s] + cfg.gamma * conts[i, s] * boot
            assert math.isclose(float(target[s, i]), float(last), rel_tol=1e-5, abs_tol=1e-6)
    # the terminal step cuts the bootstrap: R_2 of sequence 1 is its reward alone
    assert math.isclose(float(target[2, 1]), float(rewards[1, 2]), rel_tol=1e-6)
    assert values.requires_grad and not target.requires_grad


def test_replay_value_loss_pulls_the_critic_to_real_returns() -> None:
    """With the replay term on, repeated updates fit the critic to the real returns of
    the replayed states; with the weight at 0 they do not (the term is really used)."""
    errors = {}
    for weight in (0.0, 1.0):
        model, ac, latents, tokens = actor_critic_setup()
        ac.config = dataclasses.replace(ac.config, replay_critic_weight=weight, gamma=0.0)
        feats = torch.randn(8, 5, 4 * model.latent_dim + model.config.d_model)
        rewards = feats[:, :-1, 0].sign()  # learnable: the reward is the sign of a feature
        real = RealSequences(feats, rewards, torch.ones(8, 4))
        for i in range(60):
            loss = ac.update(model, latents, tokens, torch.Generator().manual_seed(i), real)
        assert (loss.replay_critic_loss > 0) == (weight > 0)
        values, target = ac.replay_returns(real)
        errors[weight] = float((values - target).detach().square().mean())
    assert errors[1.0] < 0.5 * errors[0.0], errors


def test_adaptation_holds_the_best_slot_to_its_own_reference(
    pong_model: tuple[WorldModel, TransitionData, float],
) -> None:
    """With one reference per known slot, the best slot is held to *its* reference: the
    same batch is recalled when that slot's own level is high and fitted anew when it is
    low, whatever the other slot's level."""
    model, held, _ = pong_model
    row = int(np.flatnonzero(held.regimes == INVERTED)[0])
    batch = gather(Adapter(1, K, 1, 1.0), held, row)
    errors = regime_errors(model, batch)
    assert errors[INVERTED] < errors[GRAVITY]  # precondition: the right slot is the best
    e = errors[INVERTED]
    adapter = Adapter(1, K, fit_steps=1, tolerance=2.0)
    loose = {INVERTED: e, GRAVITY: e / 100}  # within 2 x its own level
    kind, slot, _ = adapter.decide(copy.deepcopy(model), batch, [GRAVITY, INVERTED], FREE,
                                   loose, seed=0)  # fmt: skip
    assert (kind, slot) == ("recall", INVERTED)
    assert (adapter.last_best, adapter.last_reference) == (INVERTED, pytest.approx(e))
    tight = {INVERTED: e / 100, GRAVITY: 100 * e}  # 50x its own level
    kind, slot, _ = adapter.decide(copy.deepcopy(model), batch, [GRAVITY, INVERTED], FREE,
                                   tight, seed=0)  # fmt: skip
    assert (kind, slot) == ("new", FREE)
    assert (adapter.last_best, adapter.last_reference) == (INVERTED, pytest.approx(e / 100))
    missing = r"no reference error for slot 6; the mapping has slots \[1\]"
    with pytest.raises(ValueError, match=missing):
        adapter.decide(model, batch, [GRAVITY, INVERTED], FREE, {GRAVITY: e}, seed=0)
