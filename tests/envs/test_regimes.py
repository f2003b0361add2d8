"""Regimes of Interventional Pong and their switching schedules (spec sections 1, 2, 4).

Mechanism tests compare counterfactual transitions: a snapshot from ``get_state()`` is
restored once under the regime being tested and once with its ``"regime"`` set to 0
(neutral), the same action is taken, and the next states are compared. The random draws
of a step are the same whatever the regime (spec 1), so the difference between the two
next states is exactly what the regime's intervention does.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import gymnasium as gym
import numpy as np
import pytest

import mbrl_causal.envs  # noqa: F401  (registers the ids)

# ----------------------------------------------------------------------------- the contract
# Spec section 4, table: id -> (name, targets, simple).
SPEC_REGIMES: dict[int, tuple[str, frozenset[str], bool]] = {
    0: ("neutral", frozenset(), True),
    1: ("gravity", frozenset({"ball"}), True),
    2: ("curve", frozenset({"ball"}), True),
    3: ("friction", frozenset({"ball"}), True),
    4: ("opponent-inverted", frozenset({"opponent"}), True),
    5: ("opponent-random", frozenset({"opponent"}), True),
    6: ("controls-inverted", frozenset({"agent"}), True),
    7: ("gravity+opponent-random", frozenset({"ball", "opponent"}), False),
    8: ("curve+controls-inverted", frozenset({"ball", "agent"}), False),
    9: ("friction+opponent-inverted", frozenset({"ball", "opponent"}), False),
    10: ("gravity+controls-inverted", frozenset({"ball", "agent"}), False),
}
SIMPLE = tuple(range(7))
COMPOSITE = (7, 8, 9, 10)
# Composite regime -> (its ball part, its paddle part), both simple regimes.
COMPOSITE_PARTS = {7: (1, 5), 8: (2, 6), 9: (3, 4), 10: (1, 6)}
OBJECTS = ("opponent", "agent", "ball", "score")
GRAVITY = 0.15
CURVE = 0.12
FRICTION = 0.92
AGENT_SPEED = 1.5
OPPONENT_SPEED = 1.2
BASE_SPEED = 2.0
UP, STAY, DOWN = 1, 0, 2


def camel(name: str) -> str:
    """The CamelCase form of a regime name used in registered ids (spec section 7)."""
    return "".join(p.capitalize() for p in name.replace("+", "-").split("-"))


def fixed_id(regime: int) -> str:
    return f"InterventionalPong-{camel(SPEC_REGIMES[regime][0])}-v0"


# ----------------------------------------------------------------------------- helpers
def get_state(env: gym.Env) -> dict[str, Any]:
    return env.get_wrapper_attr("get_state")()


def set_state(env: gym.Env, state: dict[str, Any]) -> None:
    env.get_wrapper_attr("set_state")(state)


def placed(
    snap: dict[str, Any],
    *,
    ball: tuple[float, float, float, float] | None = None,
    opponent_y: float | None = None,
    agent_y: float | None = None,
) -> dict[str, Any]:
    """A copy of ``snap`` with objects moved (a do-intervention on their variables)."""
    s = dict(snap)
    s["objects"] = copy.deepcopy(snap["objects"])
    if ball is not None:
        s["objects"]["ball"] = dict(zip(("x", "y", "vx", "vy"), ball, strict=True))
    if opponent_y is not None:
        s["objects"]["opponent"]["y"] = opponent_y
    if agent_y is not None:
        s["objects"]["agent"]["y"] = agent_y
    return s


def run_from(
    env: gym.Env, snap: dict[str, Any], regime: int, actions: list[Any] | Any = STAY, n: int = 1
) -> list[dict[str, Any]]:
    """Restore ``snap`` under ``regime``, take ``n`` steps, return the states after each."""
    s = dict(snap)
    s["regime"] = regime
    set_state(env, s)
    if not isinstance(actions, list):
        actions = [actions] * n
    out = []
    for a in actions:
        env.step(a)
        out.append(get_state(env))
    return out


def step_from(env: gym.Env, snap: dict[str, Any], regime: int, action: Any = STAY) -> dict:
    return run_from(env, snap, regime, [action])[0]


def same_rng(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two snapshots have the same random-stream position."""
    ra, rb = a["rng"], b["rng"]
    return (
        ra["bit_generator"] == rb["bit_generator"]
        and ra["row_index"] == rb["row_index"]
        and np.array_equal(np.asarray(ra["rows"]), np.asarray(rb["rows"]))
    )


def speed(ball: dict[str, float]) -> float:
    return math.hypot(ball["vx"], ball["vy"])


def angle(ball: dict[str, float]) -> float:
    return math.atan2(ball["vy"], ball["vx"])


def wrap(a: float) -> float:
    return (a + math.pi) % (2.0 * math.pi) - math.pi


@pytest.fixture
def env():
    e = gym.make("InterventionalPong-Neutral-v0")
    e.reset(seed=1234)
    for a in (UP, DOWN, STAY):
        e.step(a)
    yield e
    e.close()


@pytest.fixture
def snap(env):
    """A mid-episode snapshot; tests move the objects where they need them."""
    return get_state(env)


# Mid-field states where no wall, paddle or scoring event can happen in one step:
# (ball (x, y, vx, vy), opponent y, agent y). The ball never has the opponent's y.
MIDFIELD = [
    ((16.0, 16.0, 2.0, 0.0), 12.0, 20.0),
    ((13.0, 10.0, -1.5, 1.0), 20.0, 9.0),
    ((19.0, 22.0, 1.2, -1.4), 14.5, 24.0),
    ((15.0, 19.5, -1.8, -0.6), 18.9, 15.0),
]


def midfield_snaps(snap: dict[str, Any]) -> list[dict[str, Any]]:
    return [placed(snap, ball=b, opponent_y=o, agent_y=a) for b, o, a in MIDFIELD]


def rollout_snaps(n: int = 40, seed: int = 7) -> list[dict[str, Any]]:
    """Snapshots along a neutral rollout with random actions (events included)."""
    e = gym.make("InterventionalPong-Neutral-v0")
    e.reset(seed=seed)
    rng = np.random.default_rng(seed)
    snaps = []
    while len(snaps) < n:
        snaps.append(get_state(e))
        for _ in range(3):
            _, _, term, trunc, _ = e.step(int(rng.integers(3)))
            if term or trunc:
                e.reset()
    e.close()
    return snaps


# ============================================================================ mechanisms
@pytest.mark.parametrize("regime", range(11))
def test_untargeted_objects_behave_exactly_as_in_neutral_midfield(env, snap, regime):
    """Objects that a regime does not target have bitwise the neutral next state, and the
    targeted ones do differ from neutral somewhere (spec 4, "mechanisms targeted")."""
    targets = SPEC_REGIMES[regime][1]
    differs = set()
    for s in midfield_snaps(snap):
        for action in (STAY, UP, DOWN):
            neutral = step_from(env, s, 0, action)
            under = step_from(env, s, regime, action)
            # the same random numbers are drawn whatever the regime (spec 1)
            assert same_rng(under, neutral)
            for obj in OBJECTS:
                if obj in targets:
                    if under["objects"][obj] != neutral["objects"][obj]:
                        differs.add(obj)
                else:
                    assert under["objects"][obj] == neutral["objects"][obj], (regime, obj, action)
    assert differs == set(targets)


def test_untargeted_objects_behave_exactly_as_in_neutral_along_rollout(env):
    """Same, on states of a real rollout (wall bounces, paddle hits and points included).

    A ball regime may change whether a point is scored, so the score is compared only for
    regimes that leave the ball alone."""
    snaps = rollout_snaps()
    for regime in range(1, 11):
        targets = SPEC_REGIMES[regime][1]
        compared = [o for o in ("opponent", "agent", "ball") if o not in targets]
        if "ball" not in targets:
            compared.append("score")
        for s in snaps:
            for action in (STAY, UP, DOWN):
                neutral = step_from(env, s, 0, action)
                under = step_from(env, s, regime, action)
                assert same_rng(under, neutral)
                for obj in compared:
                    assert under["objects"][obj] == neutral["objects"][obj], (regime, obj)


@pytest.mark.parametrize("regime", COMPOSITE)
def test_composite_regime_combines_its_two_parts(env, snap, regime):
    """7-10 do exactly what their two simple parts do, each on its own object."""
    ball_part, paddle_part = COMPOSITE_PARTS[regime]
    for s in [*midfield_snaps(snap), *rollout_snaps(10, seed=regime)]:
        for action in (STAY, UP, DOWN):
            comp = step_from(env, s, regime, action)["objects"]
            b = step_from(env, s, ball_part, action)["objects"]
            p = step_from(env, s, paddle_part, action)["objects"]
            assert comp["ball"] == b["ball"]
            assert comp["score"] == b["score"]
            for paddle in ("opponent", "agent"):
                assert comp[paddle] == p[paddle]


# ---------------------------------------------------------------------------- gravity
@pytest.mark.parametrize("regime", [1, 7, 10])
@pytest.mark.parametrize("ball", [(16.0, 16.0, 2.0, 0.0), (14.0, 12.0, -1.6, -1.2)])
def test_gravity_adds_to_vy_each_step(env, snap, regime, ball):
    s = placed(snap, ball=ball, opponent_y=10.0, agent_y=22.0)
    neutral = step_from(env, s, 0)["objects"]["ball"]
    under = step_from(env, s, regime)["objects"]["ball"]
    assert under["vx"] == neutral["vx"]
    assert under["x"] == neutral["x"]
    assert under["vy"] - neutral["vy"] == pytest.approx(GRAVITY, abs=1e-12)
    assert under["y"] - neutral["y"] == pytest.approx(GRAVITY, abs=1e-12)


def test_gravity_bends_the_ball_path(env, snap):
    """Over several steps the ball falls (y grows) ever faster relative to neutral."""
    s = placed(snap, ball=(8.0, 9.0, 2.0, 0.0), opponent_y=25.0, agent_y=25.0)
    n = 6
    neutral = run_from(env, s, 0, n=n)
    under = run_from(env, s, 1, n=n)
    dy = [
        u["objects"]["ball"]["y"] - v["objects"]["ball"]["y"]
        for u, v in zip(under, neutral, strict=True)
    ]
    dvy = [
        u["objects"]["ball"]["vy"] - v["objects"]["ball"]["vy"]
        for u, v in zip(under, neutral, strict=True)
    ]
    assert all(d > 0 for d in dy)
    steps = np.diff([0.0, *dy])
    assert np.all(np.diff(steps) > 0.1), dy  # the gap grows faster and faster: a parabola
    assert dvy == pytest.approx([GRAVITY * (k + 1) for k in range(n)], abs=0.03)
    assert dy[-1] == pytest.approx(GRAVITY * n * (n + 1) / 2, abs=0.2)


# ---------------------------------------------------------------------------- curve
CURVE_BALLS = [
    (16.0, 16.0, 2.0, 0.0),
    (13.0, 10.0, -1.5, 1.0),
    (18.0, 20.0, 1.0, -1.2),
    (15.0, 14.0, -2.0, -0.5),
]


@pytest.mark.parametrize("regime", [2, 8])
def test_curve_rotates_the_direction_by_a_fixed_angle(env, snap, regime):
    turns = []
    for ball in CURVE_BALLS:
        s = placed(snap, ball=ball, opponent_y=8.0, agent_y=24.0)
        neutral = step_from(env, s, 0)["objects"]["ball"]
        under = step_from(env, s, regime)["objects"]["ball"]
        assert speed(under) == pytest.approx(speed(neutral), rel=1e-12)
        turns.append(wrap(angle(under) - angle(neutral)))
    assert [abs(t) for t in turns] == pytest.approx([CURVE] * len(turns), abs=1e-9)
    # a rotation: the same sense whichever way the ball flies
    assert len({math.copysign(1.0, t) for t in turns}) == 1


def test_curve_keeps_turning_step_after_step(env, snap):
    s = placed(snap, ball=(8.0, 16.0, 2.0, 0.0), opponent_y=25.0, agent_y=25.0)
    n = 5
    neutral = run_from(env, s, 0, n=n)
    under = run_from(env, s, 2, n=n)
    turns = [
        abs(wrap(angle(u["objects"]["ball"]) - angle(v["objects"]["ball"])))
        for u, v in zip(under, neutral, strict=True)
    ]
    assert turns == pytest.approx([CURVE * (k + 1) for k in range(n)], abs=1e-9)
    for u, v in zip(under, neutral, strict=True):
        assert speed(u["objects"]["ball"]) == pytest.approx(speed(v["objects"]["ball"]))


# ---------------------------------------------------------------------------- friction
@pytest.mark.parametrize("regime", [3, 9])
@pytest.mark.parametrize(
    "ball",
    [(16.0, 16.0, 2.0, 0.0), (13.0, 10.0, -1.5, 1.0), (19.0, 22.0, 1.2, -1.4), (11.0, 20, 1, 1)],
)
def test_friction_slows_the_ball_inside_the_band(env, snap, regime, ball):
    s = placed(snap, ball=ball, opponent_y=6.0, agent_y=6.0)
    neutral = step_from(env, s, 0)["objects"]["ball"]
    under = step_from(env, s, regime)["objects"]["ball"]
    assert speed(under) / speed(neutral) == pytest.approx(FRICTION, rel=1e-12)
    assert angle(under) == pytest.approx(angle(neutral), abs=1e-12)  # direction unchanged
    x0, y0 = ball[0], ball[1]
    assert under["x"] - x0 == pytest.approx(FRICTION * (neutral["x"] - x0), rel=1e-12)
    assert under["y"] - y0 == pytest.approx(FRICTION * (neutral["y"] - y0), rel=1e-12)


@pytest.mark.parametrize("regime", [3, 9])
@pytest.mark.parametrize(
    "ball",
    [
        (7.5, 20.0, 1.5, 0.5),  # left of the band, moving right
        (24.5, 12.0, -1.5, 0.5),  # right of the band, moving left
        (10.0, 16.0, -1.5, 0.3),  # on the edges: 10 < x < 22 is strict
        (22.0, 16.0, 1.5, -0.3),
    ],
)
def test_friction_leaves_the_ball_alone_outside_the_band(env, snap, regime, ball):
    s = placed(snap, ball=ball, opponent_y=26.0, agent_y=26.0)
    assert step_from(env, s, regime)["objects"]["ball"] == step_from(env, s, 0)["objects"]["ball"]


def test_friction_compounds_in_the_band_and_a_paddle_hit_restores_base_speed(env, snap):
    s = placed(snap, ball=(9.0, 16.0, 2.0, 0.0), opponent_y=16.0, agent_y=16.0)
    set_state(env, {**s, "regime": 3})
    ball = s["objects"]["ball"]
    in_band_steps = 0
    for _ in range(15):
        env.step(STAY)
        new = get_state(env)["objects"]["ball"]
        if new["vx"] < 0:  # returned by the agent paddle
            assert speed(new) == pytest.approx(BASE_SPEED, rel=1e-12)
            break
        expected = FRICTION if 10.0 < ball["x"] < 22.0 else 1.0
        in_band_steps += expected != 1.0
        assert speed(new) / speed(ball) == pytest.approx(expected, rel=1e-12), ball
        ball = new
    else:
        pytest.fail("the ball never reached the agent paddle")
    assert in_band_steps >= 4
    assert speed(ball) < 0.75 * BASE_SPEED  # it had really slowed down before the hit


# ---------------------------------------------------------------------------- opponent
def _noise_free_moves(env, s, regime):
    """(neutral move, regime move, noise) of the opponent from ``s``.

    The neutral move is known from the spec, so the paddle noise of this step can be
    recovered from the neutral transition and removed from the regime's one."""
    o = s["objects"]
    dy = o["ball"]["y"] - o["opponent"]["y"]
    track = math.copysign(min(abs(dy), OPPONENT_SPEED), dy) if dy != 0 else 0.0
    neutral = step_from(env, s, 0)["objects"]["opponent"]["y"] - o["opponent"]["y"]
    under = step_from(env, s, regime)["objects"]["opponent"]["y"] - o["opponent"]["y"]
    noise = neutral - track
    return neutral - noise, under - noise, noise


@pytest.mark.parametrize("ball_y", [22.0, 16.5, 15.3, 6.0])
def test_neutral_opponent_tracks_the_ball(env, snap, ball_y):
    """Spec 2: toward the ball's y by min(|dy|, 1.2); checked through the noise, which
    must be the same small paddle noise whatever the ball does."""
    noises = []
    for y in (ball_y, 16.0):  # ball at the opponent's height: no tracking move
        s = placed(snap, ball=(16.0, y, 2.0, 0.0), opponent_y=16.0, agent_y=16.0)
        noises.append(step_from(env, s, 0)["objects"]["opponent"]["y"] - 16.0)
    move = noises[0] - noises[1]
    dy = ball_y - 16.0
    assert move == pytest.approx(math.copysign(min(abs(dy), OPPONENT_SPEED), dy), abs=1e-12)
    assert abs(noises[1]) < 0.5  # sigma 0.1


@pytest.mark.parametrize("regime", [4, 9])
@pytest.mark.parametrize("ball_y", [22.0, 16.5, 15.3, 6.0])
def test_inverted_opponent_moves_away_from_the_ball(env, snap, regime, ball_y):
    s = placed(snap, ball=(16.0, ball_y, 2.0, 0.0), opponent_y=16.0, agent_y=16.0)
    neutral, under, _ = _noise_free_moves(env, s, regime)
    dy = ball_y - 16.0
    assert neutral == pytest.approx(math.copysign(min(abs(dy), OPPONENT_SPEED), dy), abs=1e-12)
    assert under == pytest.approx(-neutral, abs=1e-12)
    assert math.copysign(1.0, under) == -math.copysign(1.0, dy)  # away from the ball


@pytest.mark.parametrize("regime", [4, 9])
def test_inverted_opponent_stays_when_level_with_the_ball(env, snap, regime):
    s = placed(snap, ball=(16.0, 16.0, 2.0, 0.0), opponent_y=16.0, agent_y=16.0)
    under = step_from(env, s, regime)["objects"]["opponent"]
    assert under == step_from(env, s, 0)["objects"]["opponent"]


@pytest.mark.parametrize("regime", [5, 7])
def test_random_opponent_ignores_the_ball(env, snap, regime):
    """Moving the ball changes the opponent's next y in neutral, never under the random
    opponent regimes."""
    base = placed(snap, ball=(16.0, 16.0, 2.0, 0.0), opponent_y=16.0, agent_y=16.0)
    moved = [
        placed(base, ball=(16.0, y, vx, vy))
        for y, vx, vy in [(6.0, 2.0, 0.0), (26.0, -1.5, 1.0), (16.8, 1.0, -1.0), (4.0, 2, 1)]
    ]
    opp = step_from(env, base, regime)["objects"]["opponent"]
    neutral_opp = step_from(env, base, 0)["objects"]["opponent"]
    for s in moved:
        assert step_from(env, s, regime)["objects"]["opponent"] == opp
        assert step_from(env, s, 0)["objects"]["opponent"] != neutral_opp
    # over many steps the opponent's path does not depend on the ball either
    a = run_from(env, moved[0], regime, n=25)
    b = run_from(env, moved[1], regime, n=25)
    assert [x["objects"]["opponent"] for x in a] == [x["objects"]["opponent"] for x in b]
    na = run_from(env, moved[0], 0, n=25)
    nb = run_from(env, moved[1], 0, n=25)
    assert [x["objects"]["opponent"] for x in na] != [x["objects"]["opponent"] for x in nb]


def test_random_opponent_does_a_random_walk(env):
    """The walk's steps are bounded by the opponent speed and really vary."""
    walks = []
    for s in rollout_snaps(40, seed=3):
        if not 8.0 <= s["objects"]["opponent"]["y"] <= 24.0:
            continue  # keep clipping out of the picture
        _, walk, _ = _noise_free_moves(env, s, 5)
        walks.append(walk)
    assert len(walks) >= 20
    walks_arr = np.array(walks)
    assert np.all(np.abs(walks_arr) <= OPPONENT_SPEED + 1e-9)
    assert walks_arr.min() < -0.3 and walks_arr.max() > 0.3
    assert walks_arr.std() > 0.3


# ---------------------------------------------------------------------------- agent
@pytest.mark.parametrize("regime", [6, 8, 10])
def test_inverted_controls_move_the_agent_the_other_way(env, snap, regime):
    s = placed(snap, ball=(16.0, 16.0, 2.0, 0.0), opponent_y=12.0, agent_y=16.0)
    y0 = 16.0
    noise = step_from(env, s, 0, STAY)["objects"]["agent"]["y"] - y0
    assert abs(noise) < 0.5
    for action, neutral_move in ((UP, -AGENT_SPEED), (DOWN, AGENT_SPEED)):
        neutral = step_from(env, s, 0, action)["objects"]["agent"]
        under = step_from(env, s, regime, action)["objects"]["agent"]
        # spec 2: up moves towards y = 0 by 1.5 per step
        assert neutral["y"] - y0 - noise == pytest.approx(neutral_move, abs=1e-12)
        assert under["y"] - y0 - noise == pytest.approx(-neutral_move, abs=1e-12)
        assert under["vy"] == pytest.approx(under["y"] - y0, abs=1e-12)
    # "stay" is not inverted
    under = step_from(env, s, regime, STAY)["objects"]["agent"]
    assert under == step_from(env, s, 0, STAY)["objects"]["agent"]


def test_inverted_controls_with_continuous_actions():
    env = gym.make("InterventionalPong-ControlsInverted-v0", action_type="continuous")
    env.reset(seed=5)
    s = placed(get_state(env), ball=(16.0, 16.0, 2.0, 0.0), opponent_y=12.0, agent_y=16.0)
    zero = np.zeros(1, np.float32)
    noise = step_from(env, s, 0, zero)["objects"]["agent"]["y"] - 16.0
    for a in (0.5, -1.0, 0.2):
        action = np.array([a], np.float32)
        neutral = step_from(env, s, 0, action)["objects"]["agent"]["y"] - 16.0 - noise
        under = step_from(env, s, 6, action)["objects"]["agent"]["y"] - 16.0 - noise
        assert abs(neutral) == pytest.approx(abs(float(action[0])) * AGENT_SPEED, abs=1e-9)
        assert under == pytest.approx(-neutral, abs=1e-12)
    env.close()


# ============================================================================ schedules
def _reset(env, seed=None, **kw):
    _, info = env.reset(seed=seed, **kw)
    return info


def _step(env, action=STAY):
    *_, info = env.step(action)
    return info


def test_info_always_has_regime_and_switch_flag():
    env = gym.make("InterventionalPong-v0", regime_schedule="cycle", switch_every=1)
    for ep in range(3):
        info = _reset(env, seed=ep)
        infos = [info] + [_step(env, a) for a in (UP, DOWN, STAY)]
        for i in infos:
            assert type(i["regime"]) is int
            assert type(i["regime_switched"]) is bool
    env.close()


@pytest.mark.parametrize("regime", range(11))
def test_fixed_regime_ids_stay_fixed(regime):
    env = gym.make(fixed_id(regime))
    for ep in range(4):
        info = _reset(env, seed=ep if ep % 2 else None)
        assert info["regime"] == regime and not info["regime_switched"]
        for t in range(5):
            info = _step(env, t % 3)
            assert info["regime"] == regime and not info["regime_switched"]
        assert get_state(env)["regime"] == regime
    env.close()


@pytest.mark.parametrize("schedule", [3, "friction", "Friction"])
def test_fixed_schedule_by_id_or_name(schedule):
    env = gym.make("InterventionalPong-v0", regime_schedule=schedule, switch_every=1)
    for _ in range(4):
        assert _reset(env)["regime"] == 3
        assert _step(env)["regime"] == 3
    env.close()


def test_cycle_goes_through_the_simple_regimes_in_order():
    env = gym.make("InterventionalPong-v0", regime_schedule="cycle", switch_every=2)
    for ep in range(20):
        info = _reset(env, seed=0 if ep == 0 else None)
        expected = SIMPLE[(ep // 2) % len(SIMPLE)]
        switch_now = ep > 0 and ep % 2 == 0
        assert info["regime"] == expected, ep
        first = _step(env)
        assert first["regime"] == expected and first["regime_switched"] == switch_now
        second = _step(env)
        assert second["regime"] == expected and not second["regime_switched"]
    env.close()


def _random_episode_regimes(seed, n_episodes=45):
    env = gym.make("InterventionalPong-v0", regime_schedule="random", switch_every=3)
    regimes, flags = [], []
    for ep in range(n_episodes):
        info = _reset(env, seed=seed if ep == 0 else None)
        step_info = _step(env)
        assert step_info["regime"] == info["regime"]
        regimes.append(info["regime"])
        flags.append(step_info["regime_switched"])
    env.close()
    return regimes, flags


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_schedule_switches_every_n_episodes_to_another_simple_regime(seed):
    regimes, flags = _random_episode_regimes(seed)
    assert set(regimes) <= set(SIMPLE)
    for ep in range(1, len(regimes)):
        if ep % 3 == 0:
            assert regimes[ep] != regimes[ep - 1], (ep, regimes)
            assert flags[ep]
        else:
            assert regimes[ep] == regimes[ep - 1], (ep, regimes)
            assert not flags[ep]
    assert not flags[0]


def test_random_schedule_is_seeded_and_covers_all_simple_regimes():
    runs = [_random_episode_regimes(seed)[0] for seed in (0, 1, 2)]
    assert runs[0] == _random_episode_regimes(0)[0]  # same seed, same schedule
    assert len({tuple(r) for r in runs}) > 1  # different seeds, different schedules
    assert {r for run in runs for r in run} == set(SIMPLE)


def test_random_schedule_leaves_a_forced_composite_regime_for_a_simple_one():
    env = gym.make("InterventionalPong-v0", regime_schedule="random", switch_every=3)
    _reset(env, seed=0)
    assert _reset(env, options={"regime": 9})["regime"] == 9
    assert _reset(env)["regime"] == 9  # holds until the next switch point
    for _ in range(10):
        info = _reset(env)
        assert info["regime"] in SIMPLE
    env.close()


def _run_global_steps(env, n_steps):
    """Steps with random actions across episodes; returns (regime, switched) per step."""
    rng = np.random.default_rng(0)
    info = _reset(env, seed=0)
    resets = []
    out = []
    pending = None
    for t in range(n_steps):
        _, _, term, trunc, info = env.step(int(rng.integers(3)))
        out.append((info["regime"], info["regime_switched"]))
        if pending is not None:
            # step-based schedules do not switch at resets: the reset shows the regime that
            # acts on the next step (a switch due after the last step is already made)
            assert info["regime"] == pending
            pending = None
        if term or trunc:
            info = _reset(env)
            resets.append(t)
            pending = info["regime"]
            assert not info["regime_switched"]
    return out, resets


def test_cycle_every_k_steps_switches_inside_episodes():
    k = 7
    env = gym.make(
        "InterventionalPong-v0", regime_schedule="cycle", switch_every_steps=k, points_to_win=1
    )
    out, resets = _run_global_steps(env, 120)
    assert any((t + 1) % k for t in resets), "need an episode boundary inside a block"
    for t, (regime, switched) in enumerate(out):
        assert regime == SIMPLE[(t // k) % len(SIMPLE)], t
        assert switched == (t > 0 and t % k == 0), t
    env.close()


@pytest.mark.parametrize("k", [1, 5])
def test_random_every_k_steps_switches_inside_episodes(k):
    env = gym.make(
        "InterventionalPong-v0", regime_schedule="random", switch_every_steps=k, points_to_win=1
    )
    out, resets = _run_global_steps(env, 100)
    assert resets
    regimes = [r for r, _ in out]
    assert set(regimes) <= set(SIMPLE)
    for t in range(1, len(out)):
        if t % k == 0:
            assert regimes[t] != regimes[t - 1] and out[t][1], t
        else:
            assert regimes[t] == regimes[t - 1] and not out[t][1], t
    assert not out[0][1]
    env.close()


@pytest.mark.parametrize(
    "schedule",
    [[(0, "gravity"), (2, 5)], [(2, 5), (0, "gravity")], [(0, 1), (2, "opponent-random")]],
)
def test_explicit_list_schedule(schedule):
    env = gym.make("InterventionalPong-v0", regime_schedule=schedule)
    expected = [1, 1, 5, 5, 5, 5]
    for ep, regime in enumerate(expected):
        info = _reset(env, seed=0 if ep == 0 else None)
        assert info["regime"] == regime
        first = _step(env)
        assert first["regime"] == regime and first["regime_switched"] == (ep == 2)
        assert not _step(env)["regime_switched"]
    env.close()


def test_set_regime_takes_effect_on_the_next_step():
    env = gym.make("InterventionalPong-Neutral-v0")
    _reset(env, seed=0)
    for _ in range(3):
        _step(env)
    before = get_state(env)
    env.unwrapped.set_regime("curve")
    assert get_state(env)["regime"] == 2
    info = _step(env, UP)
    assert info["regime"] == 2 and info["regime_switched"]
    after = get_state(env)
    # the step really ran under curve: it equals a do(regime=curve) on the old snapshot
    assert after["objects"] == step_from(env, before, 2, UP)["objects"]
    assert after["objects"] != step_from(env, before, 0, UP)["objects"]
    set_state(env, after)
    assert not _step(env)["regime_switched"]
    # by id; setting the regime already in force is no switch
    env.unwrapped.set_regime(6)
    info = _step(env)
    assert info["regime"] == 6 and info["regime_switched"]
    env.unwrapped.set_regime("controls-inverted")
    assert not _step(env)["regime_switched"]
    # a fixed schedule does not undo a set_regime in the middle of the episode
    for _ in range(5):
        assert _step(env)["regime"] == 6
    env.close()


def test_reset_option_regime_takes_effect():
    env = gym.make("InterventionalPong-v0", regime_schedule="cycle", switch_every=2)
    assert _reset(env, seed=0)["regime"] == 0
    _step(env)
    info = _reset(env, options={"regime": "curve"})
    assert info["regime"] == 2
    first = _step(env)
    assert first["regime"] == 2 and first["regime_switched"]
    assert not _step(env)["regime_switched"]
    # the schedule goes on at its next switch point (episode 2 -> regime 1)
    assert _reset(env)["regime"] == 1
    first = _step(env)
    assert first["regime"] == 1 and first["regime_switched"]
    env.close()

    env = gym.make("InterventionalPong-Neutral-v0")
    _reset(env, seed=0)
    assert _step(env)["regime"] == 0
    assert _reset(env, options={"regime": 8})["regime"] == 8
    info = _step(env)
    assert info["regime"] == 8 and info["regime_switched"]
    env.close()


def _assert_names_regimes(msg: str) -> None:
    for name in ("neutral", "gravity", "controls-inverted", "gravity+controls-inverted"):
        assert name in msg, msg


@pytest.mark.parametrize("bad", ["bogus", "gravty", 11, -1])
def test_unknown_regime_is_rejected_naming_the_allowed_ones(bad):
    with pytest.raises(ValueError) as e:
        gym.make("InterventionalPong-v0", regime_schedule=bad)
    _assert_names_regimes(str(e.value))

    env = gym.make("InterventionalPong-Neutral-v0")
    _reset(env, seed=0)
    with pytest.raises(ValueError) as e:
        env.unwrapped.set_regime(bad)
    _assert_names_regimes(str(e.value))
    with pytest.raises(ValueError) as e:
        env.reset(options={"regime": bad})
    _assert_names_regimes(str(e.value))
    with pytest.raises(ValueError) as e:
        gym.make("InterventionalPong-v0", regime_schedule=[(0, 1), (3, bad)])
    _assert_names_regimes(str(e.value))
    # a rejected set_regime leaves the regime alone
    assert _step(env)["regime"] == 0
    env.close()


def test_unknown_schedule_name_mentions_cycle_and_random():
    """A misspelt schedule kind: the allowed values include 'cycle' and 'random'."""
    for bad in ("cyclic", "rand"):
        with pytest.raises(ValueError) as e:
            gym.make("InterventionalPong-v0", regime_schedule=bad)
        assert "cycle" in str(e.value) and "random" in str(e.value), str(e.value)


@pytest.mark.parametrize("bad", [2.5, None, []])
def test_bad_schedule_type_is_rejected(bad):
    with pytest.raises(ValueError) as e:
        gym.make("InterventionalPong-v0", regime_schedule=bad)
    if bad != []:
        assert "cycle" in str(e.value) and "random" in str(e.value)


@pytest.mark.parametrize("bad", [0, -3, 1.5, True])
def test_bad_switch_every_is_rejected(bad):
    with pytest.raises(ValueError, match="switch_every") as e:
        gym.make("InterventionalPong-v0", regime_schedule="cycle", switch_every=bad)
    assert "positive" in str(e.value)


@pytest.mark.parametrize("bad", [0, -1, 2.0])
def test_bad_switch_every_steps_is_rejected(bad):
    with pytest.raises(ValueError, match="switch_every_steps") as e:
        gym.make("InterventionalPong-v0", regime_schedule="random", switch_every_steps=bad)
    assert "positive" in str(e.value)


@pytest.mark.parametrize("schedule", [2, "gravity", [(0, 1), (3, 2)]])
def test_switch_every_steps_needs_cycle_or_random(schedule):
    with pytest.raises(ValueError, match="switch_every_steps") as e:
        gym.make("InterventionalPong-v0", regime_schedule=schedule, switch_every_steps=10)
    assert "cycle" in str(e.value) and "random" in str(e.value)


@pytest.mark.parametrize(
    "bad_list",
    [
        [(0, "gravity"), 5],
        [(0, 1, 2)],
        [("zero", 1)],
        [(-1, 1)],
        [(0.5, 1)],
    ],
)
def test_bad_list_item_is_rejected(bad_list):
    with pytest.raises(ValueError, match="regime_schedule") as e:
        gym.make("InterventionalPong-v0", regime_schedule=bad_list)
    assert "episode" in str(e.value)


# ============================================================================ descriptions
def test_regimes_are_described():
    env = gym.make("InterventionalPong-v0")
    regimes = list(env.unwrapped.regimes)
    assert [r.id for r in regimes] == list(range(11))
    for r in regimes:
        name, targets, simple = SPEC_REGIMES[r.id]
        assert r.name == name
        assert set(r.targets) == set(targets)
        assert len(r.targets) == len(targets)
        assert r.simple is simple
        d = r.as_dict()
        assert d["id"] == r.id and d["name"] == name and set(d["targets"]) == set(targets)
        assert d["kind"] == ("simple" if simple else "composite")
        # every name resolves to its id
        env.unwrapped.set_regime(name)
        assert env.unwrapped.regime == r.id
    env.close()


def test_every_regime_has_a_registered_fixed_id():
    for regime in range(11):
        env_id = fixed_id(regime)
        assert env_id in gym.registry
        env = gym.make(env_id)
        assert _reset(env, seed=0)["regime"] == regime
        env.close()
