"""Rendering, masks, observation bounds, snapshots and distractor wrappers.

The contract is ``shared/specs/interventional-pong.md`` (sections 3, 5, 6). Expected frames
and masks come from a small reference rasteriser written here from the geometry in the spec
(field 32 x 32, pixel centres ``((c + 0.5) * 32 / S, (r + 0.5) * 32 / S)``), fed with the
physical state from ``get_state()``; the package's render functions are never used for the
expected values.
"""

from __future__ import annotations

import copy
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces

import mbrl_causal.envs  # noqa: F401  (registers the ids)
from mbrl_causal.envs.distractors import (
    DISTRACTOR_RADIUS,
    BackgroundNoise,
    DistractorObjects,
    NoiseDims,
)
from mbrl_causal.envs.pong import InterventionalPongEnv
from mbrl_causal.envs.regimes import REGIMES, camel_name
from mbrl_causal.envs.render import (
    DISTRACTOR_COLOURS,
    OBJECT_COLOURS,
    WALL_COLOUR,
)

PLAIN = "InterventionalPong-v0"
DISTRACT = "InterventionalPongDistractors-v0"
SIZES = (32, 64, 84)
FIELD = 32.0
BALL_R = 1.2
WHITE = np.array([255, 255, 255], np.uint8)
BLACK = np.array([0, 0, 0], np.uint8)
POINT_COLOURS = ("score", "opponent", "agent")  # drawing order before the ball


# --------------------------------------------------------------------------- reference
def centres(size: int) -> np.ndarray:
    return (np.arange(size) + 0.5) * FIELD / size


def coords(size: int) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) field coordinates of every pixel centre, each (S, S) indexed [row, col]."""
    c = centres(size)
    yy, xx = np.meshgrid(c, c, indexing="ij")
    return xx, yy


def ref_disc(size: int, x: float, y: float, r: float) -> np.ndarray:
    xx, yy = coords(size)
    return (xx - x) ** 2 + (yy - y) ** 2 <= r**2


def ref_paddle(size: int, x: float, y: float) -> np.ndarray:
    xx, yy = coords(size)
    return (np.abs(xx - x) <= 1.0) & (np.abs(yy - y) <= 3.0)


def ref_score(size: int, opp: int, agent: int, ptw: int) -> np.ndarray:
    xx, yy = coords(size)
    strip = yy < 1.0
    left = (xx >= 1.0) & (xx < 1.0 + 14.0 * opp / ptw)
    right = (xx <= 31.0) & (xx > 31.0 - 14.0 * agent / ptw)
    return strip & (left | right)


def wall_rows(size: int) -> np.ndarray:
    """Bool (S, S): pixels in the wall rows (centres with y in [1, 2) or [30, 31))."""
    _, yy = coords(size)
    return ((yy >= 1.0) & (yy < 2.0)) | ((yy >= 30.0) & (yy < 31.0))


def distractor_names(env: gym.Env) -> list[str]:
    return [n for n in env.get_wrapper_attr("graph_nodes") if n.startswith("distractor_")]


def reference(state: dict[str, Any], size: int, ptw: int, trail: bool, names: list[str]):
    """Expected (masks (n, S, S), frame without background (S, S, 3)) from a snapshot."""
    o = state["objects"]
    b = o["ball"]
    disc = ref_disc(size, b["x"], b["y"], BALL_R)
    trail_disc = ref_disc(size, b["x"] - b["vx"], b["y"] - b["vy"], BALL_R)
    parts = {
        "opponent": ref_paddle(size, 5.0, o["opponent"]["y"]),
        "agent": ref_paddle(size, 27.0, o["agent"]["y"]),
        "score": ref_score(size, o["score"]["opponent_points"], o["score"]["agent_points"], ptw),
    }
    ball_mask = disc | trail_disc if trail else disc
    dmasks = [ref_disc(size, o[n]["x"], o[n]["y"], DISTRACTOR_RADIUS) for n in names]
    masks = np.stack(
        [parts["opponent"], parts["agent"], ball_mask, parts["score"], *dmasks]
    ).astype(bool)
    img = np.zeros((size, size, 3), np.uint8)
    img[wall_rows(size)] = WALL_COLOUR
    for name in POINT_COLOURS:
        img[parts[name]] = OBJECT_COLOURS[name]
    if trail:
        img[trail_disc] = OBJECT_COLOURS["trail"]
    img[disc] = OBJECT_COLOURS["ball"]
    for j, m in enumerate(dmasks):
        img[m] = DISTRACTOR_COLOURS[j % len(DISTRACTOR_COLOURS)]
    return masks, img


def check_frame(
    obs: dict[str, Any], env: gym.Env, stats: dict[str, int], colours: bool = True
) -> None:
    """Masks and pixels of a dict observation against the reference rasteriser.

    ``colours=False`` skips the comparison of the whole frame with the reference drawing
    (which gives distractor i the colour ``DISTRACTOR_COLOURS[i]``).
    """
    state = env.get_wrapper_attr("get_state")()
    pix, masks = obs["pixels"], obs["masks"]
    size = pix.shape[0]
    names = distractor_names(env)
    ptw = env.get_wrapper_attr("points_to_win")
    trail = env.get_wrapper_attr("ball_trail")
    ref_masks, ref_img = reference(state, size, ptw, trail, names)
    objects = list(env.get_wrapper_attr("graph_nodes")[:-2])
    assert masks.dtype == bool and masks.shape == (len(objects), size, size)
    for j, name in enumerate(objects):
        assert np.array_equal(masks[j], ref_masks[j]), f"mask of {name!r} is not its footprint"

    # the frame without any object: black, walls in their rows, or the background image
    walls = wall_rows(size)
    empty = np.zeros_like(pix)
    empty[walls] = WALL_COLOUR
    bg = state.get("background", {}).get("image")
    if bg is not None:
        empty = np.where(walls[..., None], empty, bg)
        ref_img = np.where(ref_img.any(-1, keepdims=True), ref_img, bg)
    union = masks.any(0)
    differs = (pix != empty).any(-1)
    # (a) every pixel that differs from the empty frame lies in some mask
    assert not (differs & ~union).any(), "object-like pixels outside every mask"
    # (b) outside the masks: walls in wall rows, background (black) elsewhere
    outside = ~union
    assert np.all(pix[outside & walls] == WALL_COLOUR)
    if bg is None:
        assert np.all(pix[outside & ~walls] == BLACK)
    else:
        assert np.array_equal(pix[outside & ~walls], bg[outside & ~walls])
    # (c) the whole frame is the objects drawn in order (on the background)
    if colours:
        assert np.array_equal(pix, ref_img)
    # (d) the ball's white appears only inside the ball mask, and is visible
    white = (pix == WHITE).all(-1)
    assert not (white & ~masks[2]).any()
    stats["white"] += int(white.any())
    stats["score"] += int(masks[3].any())
    stats["trail"] += int((masks[2] & ~ref_disc(size, *_ball_xy(state), BALL_R)).any())
    stats["overlap"] += int((masks[2] & (masks[0] | masks[1])).any())
    stats["distractor"] += int(masks[4:].any()) if len(objects) > 4 else 0


def _ball_xy(state: dict[str, Any]) -> tuple[float, float]:
    b = state["objects"]["ball"]
    return b["x"], b["y"]


def random_rollout(env: gym.Env, n: int, seed: int, fn=None) -> None:
    """Random actions for n steps (resetting when an episode ends), calling fn(obs)."""
    rng = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    if fn is not None:
        fn(obs)
    for _ in range(n):
        obs, _, term, trunc, _ = env.step(int(rng.integers(3)))
        if term or trunc:
            obs, _ = env.reset()
        if fn is not None:
            fn(obs)


# --------------------------------------------------------------------------- 1. masks
MASK_CASES = [
    (PLAIN, 32, {}),
    (PLAIN, 64, {}),
    (PLAIN, 84, {}),
    (PLAIN, 32, {"ball_trail": False}),
    (DISTRACT, 32, {"background": None}),
    (DISTRACT, 64, {}),
    (DISTRACT, 84, {"background": "hard"}),
]


@pytest.mark.parametrize(("env_id", "size", "kwargs"), MASK_CASES)
def test_masks_cover_exactly_each_objects_pixels(env_id, size, kwargs):
    env = gym.make(env_id, obs_mode="dict", render_size=size, points_to_win=2, **kwargs)
    stats = dict.fromkeys(("white", "score", "trail", "overlap", "distractor"), 0)
    random_rollout(env, 300, seed=size, fn=lambda obs: check_frame(obs, env, stats))
    # the rollout exercised the interesting cases
    assert stats["white"] > 250 and stats["score"] > 10
    if env.get_wrapper_attr("ball_trail"):
        assert stats["trail"] > 250 and stats["overlap"] > 0  # trail over a paddle
    else:
        assert stats["trail"] == 0
    if env_id == DISTRACT:
        assert stats["distractor"] > 250


def test_render_matches_pixels_in_every_obs_mode():
    ref = gym.make(DISTRACT, obs_mode="dict")
    frames: list[np.ndarray] = []
    random_rollout(ref, 40, seed=5, fn=lambda obs: frames.append(obs["pixels"]))
    for mode in ("objects", "pixels", "dict"):
        env = gym.make(DISTRACT, obs_mode=mode, render_mode="rgb_array")
        got: list[np.ndarray] = []
        random_rollout(env, 40, seed=5, fn=lambda obs, env=env, got=got: got.append(env.render()))
        assert len(got) == len(frames)
        for a, b in zip(got, frames, strict=True):
            assert a.dtype == np.uint8 and np.array_equal(a, b)


# --------------------------------------------------------------------------- 2. bounds
@pytest.mark.parametrize("env_id", [PLAIN, DISTRACT])
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("obs_mode", ["objects", "pixels", "dict"])
@pytest.mark.parametrize("observe_regime", [False, True])
def test_observation_types_shapes_and_bounds(env_id, size, obs_mode, observe_regime):
    env = gym.make(env_id, obs_mode=obs_mode, render_size=size, observe_regime=observe_regime)
    n_obj = 6 if env_id == DISTRACT else 4
    keys = {"objects": {"objects"}, "pixels": {"pixels"}, "dict": {"pixels", "objects", "masks"}}
    expected = keys[obs_mode] | ({"regime"} if observe_regime else set())
    space = env.observation_space
    rng = np.random.default_rng(size)
    obs, info = env.reset(seed=size)
    for _ in range(40):
        assert space.contains(obs)
        if observe_regime or obs_mode == "dict":
            assert isinstance(space, spaces.Dict) and isinstance(obs, dict)
            assert set(obs) == expected == set(space.spaces)
            parts = obs
        else:
            assert isinstance(obs, np.ndarray)
            parts = {obs_mode: obs}
        if "objects" in parts:
            o = parts["objects"]
            assert o.dtype == np.float32 and o.shape == (n_obj, 4)
            assert np.all(np.isfinite(o)) and np.all(np.abs(o) <= 1.0)
        if "pixels" in parts:
            assert parts["pixels"].dtype == np.uint8 and parts["pixels"].shape == (size, size, 3)
        if "masks" in parts:
            assert parts["masks"].dtype == bool
            assert parts["masks"].shape == (n_obj, size, size)
        if observe_regime:
            assert space["regime"] == spaces.Discrete(len(REGIMES))
            assert int(parts["regime"]) == info["regime"]
        obs, _, term, trunc, info = env.step(int(rng.integers(3)))
        if term or trunc:
            obs, info = env.reset()


@pytest.mark.parametrize("regime", [r.id for r in REGIMES])
def test_object_features_stay_in_bounds_under_every_regime(regime):
    env = gym.make(f"InterventionalPong-{camel_name(REGIMES[regime])}-v0")
    env = DistractorObjects(env, n=2)
    seen = []
    random_rollout(env, 200, seed=regime, fn=seen.append)
    feats = np.stack(seen)
    assert feats.dtype == np.float32 and feats.shape[1:] == (6, 4)
    assert np.all(np.isfinite(feats)) and np.all(np.abs(feats) <= 1.0)
    assert all(env.observation_space.contains(o) for o in seen)


def test_bad_render_size_is_rejected():
    with pytest.raises(ValueError, match="render_size"):
        InterventionalPongEnv(render_size=48)


# --------------------------------------------------------------------------- 3. snapshots
def record(env: gym.Env, actions: np.ndarray) -> list[tuple[Any, ...]]:
    """Step through actions (resetting on episode ends); return every transition."""
    out = []
    for a in actions:
        obs, reward, term, trunc, info = env.step(int(a))
        out.append((copy.deepcopy(obs), reward, term, trunc, info["regime"], info["local_graph"]))
        if term or trunc:
            obs, info = env.reset()
            out.append((copy.deepcopy(obs), "reset", info["regime"]))
    return out


def assert_same_obs(a: Any, b: Any) -> None:
    if isinstance(a, dict):
        assert set(a) == set(b)
        for k in a:
            assert np.array_equal(a[k], b[k]), k
    else:
        assert np.array_equal(a, b)


def assert_same_records(r1: list, r2: list) -> None:
    assert len(r1) == len(r2)
    for t1, t2 in zip(r1, r2, strict=True):
        assert len(t1) == len(t2)
        assert_same_obs(t1[0], t2[0])
        for x, y in zip(t1[1:], t2[1:], strict=True):
            if isinstance(x, np.ndarray):
                assert x.dtype == y.dtype and np.array_equal(x, y)
            else:
                assert x == y


def make_snapshot_env(env_id: str, order: str | None = None) -> gym.Env:
    if order is None:
        return gym.make(env_id, obs_mode="dict", points_to_win=1, switch_every=2)
    base = gym.make(PLAIN, obs_mode="dict", points_to_win=1, switch_every=2)
    if order == "bg_outside":
        return BackgroundNoise(DistractorObjects(base, n=2), level="hard")
    return DistractorObjects(BackgroundNoise(base, level="hard", dynamic=True), n=2)


@pytest.mark.parametrize(
    ("env_id", "order"),
    [(PLAIN, None), (DISTRACT, None), (PLAIN, "bg_outside"), (PLAIN, "bg_inside")],
)
def test_snapshot_round_trip_is_bit_exact(env_id, order):
    env = make_snapshot_env(env_id, order)
    get_state = env.get_wrapper_attr("get_state")
    set_state = env.get_wrapper_attr("set_state")
    rng = np.random.default_rng(1)
    env.reset(seed=11)
    warm: list = []
    while sum(len(t) == 3 for t in warm) < 1:  # snapshot in a later episode
        warm += record(env, rng.integers(0, 3, 10))
    s = get_state()
    pristine = copy.deepcopy(s)
    actions = rng.integers(0, 3, 250)
    first = record(env, actions)
    # episodes ended (and regimes switched) inside the replayed segment
    assert sum(len(t) == 3 for t in first) >= 2
    assert len({t[-2] if len(t) == 6 else t[-1] for t in first}) >= 2
    end = get_state()

    set_state(s)
    assert_same_records(first, record(env, actions))
    set_state(copy.deepcopy(pristine))
    assert_same_records(first, record(env, actions))
    # set_state did not consume or alter the snapshot it was given
    set_state(s)
    assert_same_records(first, record(env, actions))
    assert get_state()["objects"] == end["objects"]


def test_snapshot_structure_in_field_units():
    env = gym.make(DISTRACT, obs_mode="dict")
    env.reset(seed=2)
    state = env.get_wrapper_attr("get_state")()
    objs = state["objects"]
    assert list(objs) == list(env.get_wrapper_attr("graph_nodes")[:-2])
    assert set(objs["opponent"]) >= {"y", "vy"} and set(objs["agent"]) >= {"y", "vy"}
    assert set(objs["score"]) == {"opponent_points", "agent_points"}
    for name in ("ball", "distractor_0", "distractor_1"):
        assert set(objs[name]) == {"x", "y", "vx", "vy"}
        assert 0.0 <= objs[name]["x"] <= FIELD and 2.0 <= objs[name]["y"] <= 30.0
    assert state["regime"] == env.unwrapped.regime
    copy.deepcopy(state)  # copyable


def _objects_after_step(env: gym.Env, state: dict[str, Any], action: int = 0):
    env.get_wrapper_attr("set_state")(state)
    obs, *_ = env.step(action)
    return obs, env.get_wrapper_attr("get_state")()


def test_modified_snapshot_is_a_do_intervention_on_the_ball():
    env = gym.make("InterventionalPong-Neutral-v0")
    env.reset(seed=4)
    base = env.get_wrapper_attr("get_state")()
    base["objects"]["ball"].update(x=16.0, y=12.0, vx=2.0, vy=0.0)
    moved = copy.deepcopy(base)
    moved["objects"]["ball"]["y"] = 13.0
    obs0, s0 = _objects_after_step(env, base)
    obs1, s1 = _objects_after_step(env, moved)
    b0, b1 = s0["objects"]["ball"], s1["objects"]["ball"]
    # same random numbers: the ball moves the same way, one unit lower
    assert b1["y"] == pytest.approx(b0["y"] + 1.0, abs=1e-9)
    for k in ("x", "vx", "vy"):
        assert b1[k] == pytest.approx(b0[k], abs=1e-12)
    assert abs(b0["x"] - 18.0) < 0.5  # it moved on from x = 16 with speed 2
    # observation: the ball's y feature moves by 1 unit of the [-1, 1]-scaled field
    assert obs1[2, 1] - obs0[2, 1] == pytest.approx(1.0 / 16.0, abs=1e-6)
    assert np.array_equal(obs1[2, [0, 2, 3]], obs0[2, [0, 2, 3]])
    assert np.array_equal(obs1[[1, 3]], obs0[[1, 3]])
    # a regime set in the snapshot is in force for the next step
    forced = copy.deepcopy(base)
    forced["regime"] = 1
    env.get_wrapper_attr("set_state")(forced)
    *_, info = env.step(0)
    assert info["regime"] == 1


def test_modified_snapshot_is_a_do_intervention_on_a_distractor():
    env = gym.make(DISTRACT, obs_mode="dict")
    env.reset(seed=6)
    base = env.get_wrapper_attr("get_state")()
    moved = copy.deepcopy(base)
    moved["objects"]["distractor_0"].update(x=10.0, y=16.0, vx=0.5, vy=-0.3)
    obs0, s0 = _objects_after_step(env, base)
    obs1, s1 = _objects_after_step(env, moved)
    d = s1["objects"]["distractor_0"]
    assert (d["x"], d["y"], d["vx"], d["vy"]) == pytest.approx((10.5, 15.7, 0.5, -0.3))
    assert obs1["objects"][4, :2] == pytest.approx([(10.5 - 16) / 16, (15.7 - 16) / 16], abs=1e-6)
    # nothing else changed: the other objects, and their pixels
    keep = [0, 1, 2, 3, 5]
    assert np.array_equal(obs1["objects"][keep], obs0["objects"][keep])
    assert np.array_equal(obs1["masks"][keep], obs0["masks"][keep])
    assert s1["objects"]["distractor_1"] == s0["objects"]["distractor_1"]
    assert np.array_equal(obs1["masks"][4], ref_disc(32, 10.5, 15.7, DISTRACTOR_RADIUS))


def _drop(path: tuple[str, ...]):
    def edit(s: dict[str, Any]) -> None:
        d = s
        for k in path[:-1]:
            d = d[k]
        del d[path[-1]]

    return edit


def _nan(path: tuple[str, ...]):
    def edit(s: dict[str, Any]) -> None:
        d = s
        for k in path[:-1]:
            d = d[k]
        d[path[-1]] = float("nan")

    return edit


BAD_SNAPSHOTS = [
    (PLAIN, _drop(("objects", "ball", "x"))),
    (PLAIN, _drop(("objects", "agent"))),
    (PLAIN, _drop(("rng",))),
    (PLAIN, _drop(("regime",))),
    (PLAIN, _nan(("objects", "ball", "x"))),
    (PLAIN, _nan(("objects", "opponent", "y"))),
    (PLAIN, _nan(("objects", "agent", "vy"))),
    (DISTRACT, _drop(("objects", "distractor_1"))),
    (DISTRACT, _drop(("objects", "distractor_0", "vy"))),
    (DISTRACT, _drop(("background",))),
    (DISTRACT, _drop(("distractor_rng",))),
    (DISTRACT, _drop(("objects", "ball", "vy"))),
    (DISTRACT, _nan(("objects", "distractor_0", "x"))),
    (DISTRACT, _nan(("objects", "ball", "y"))),
]


@pytest.mark.parametrize(("env_id", "edit"), BAD_SNAPSHOTS)
def test_set_state_rejects_incomplete_or_non_finite_snapshots(env_id, edit):
    env = gym.make(env_id, obs_mode="dict")
    env.reset(seed=0)
    s = env.get_wrapper_attr("get_state")()
    bad = copy.deepcopy(s)
    edit(bad)
    with pytest.raises(ValueError):
        env.get_wrapper_attr("set_state")(bad)


# --------------------------------------------------------------------------- 4. distractors
def test_distractor_objects_extend_objects_masks_nodes_and_graph():
    n = 3
    env = DistractorObjects(gym.make(PLAIN, obs_mode="dict", points_to_win=2), n=n)
    plain = gym.make(PLAIN, obs_mode="dict", points_to_win=2)
    nodes = env.get_wrapper_attr("graph_nodes")
    assert nodes == (
        "opponent", "agent", "ball", "score",
        "distractor_0", "distractor_1", "distractor_2", "action", "regime",
    )  # fmt: skip
    space = env.observation_space
    assert space["objects"].shape == (7, 4) and space["masks"].shape == (7, 32, 32)
    n_obj, m = 4 + n, 4
    obs, _ = env.reset(seed=8)
    pobs, _ = plain.reset(seed=8)
    rng = np.random.default_rng(8)
    stats = dict.fromkeys(("white", "score", "trail", "overlap", "distractor"), 0)
    states, flips = [], np.zeros(n, int)
    for _ in range(300):
        assert space.contains(obs)
        check_frame(obs, env, stats)
        # the Pong part is exactly the unwrapped game (own random stream)
        assert np.array_equal(obs["objects"][:m], pobs["objects"])
        assert np.array_equal(obs["masks"][:m], pobs["masks"])
        dmask = obs["masks"][m:].any(0)
        assert np.array_equal(obs["pixels"][~dmask], pobs["pixels"][~dmask])
        objs = env.get_wrapper_attr("get_state")()["objects"]
        states.append([[objs[f"distractor_{j}"][k] for k in "x y vx vy".split()] for j in range(n)])
        a = int(rng.integers(3))
        obs, r, term, trunc, info = env.step(a)
        pobs, pr, pterm, ptrunc, pinfo = plain.step(a)
        assert (r, term, trunc, info["regime"]) == (pr, pterm, ptrunc, pinfo["regime"])
        g, pg = info["local_graph"], pinfo["local_graph"]
        assert g.dtype == bool and g.shape == (len(nodes), n_obj)
        assert np.array_equal(g[:m, :m], pg[:m])
        assert np.array_equal(g[n_obj:, :m], pg[m:])
        # distractors: self edges only, nothing to or from them
        assert np.array_equal(g[m:n_obj, m:], np.eye(n, dtype=bool))
        assert not g[m:n_obj, :m].any() and not g[:m, m:].any() and not g[n_obj:, m:].any()
        if term or trunc:
            obs, _ = env.reset()
            pobs, _ = plain.reset()
    st = np.array(states)  # (T, n, 4)
    r = DISTRACTOR_RADIUS
    assert np.all(st[..., 0] - r >= 0.0) and np.all(st[..., 0] + r <= FIELD)
    assert np.all(st[..., 1] - r >= 2.0) and np.all(st[..., 1] + r <= 30.0)
    assert np.all(np.abs(np.diff(st[..., :2], axis=0)).sum(-1) > 0)  # they keep moving
    flips = (np.diff(np.sign(st[..., 2:]), axis=0) != 0).any(-1).sum(0)
    assert np.all(flips >= 1)  # and they bounce
    assert stats["distractor"] > 250


def test_distractor_colours_are_their_own():
    used = [tuple(c) for c in DISTRACTOR_COLOURS]
    others = [tuple(c) for c in OBJECT_COLOURS.values()] + [tuple(WALL_COLOUR), (0, 0, 0)]
    assert len(set(used)) == len(used) and not set(used) & set(others)


def test_stacked_distractor_wrappers_number_their_objects_on():
    base = gym.make(PLAIN, obs_mode="dict")
    env = DistractorObjects(DistractorObjects(base, n=2), n=3)
    names = [f"distractor_{j}" for j in range(5)]
    assert env.get_wrapper_attr("graph_nodes") == (
        "opponent", "agent", "ball", "score", *names, "action", "regime",
    )  # fmt: skip
    assert distractor_names(env) == names
    obs, _ = env.reset(seed=3)
    assert obs["objects"].shape == (9, 4) and obs["masks"].shape == (9, 32, 32)
    stats = dict.fromkeys(("white", "score", "trail", "overlap", "distractor"), 0)
    for _ in range(20):
        check_frame(obs, env, stats, colours=False)  # see the colour test below
        obs, *_, info = env.step(1)
        g = info["local_graph"]
        assert g.shape == (11, 9)
        assert np.array_equal(g[4:9, 4:], np.eye(5, dtype=bool))
        assert not g[:4, 4:].any() and not g[9:, 4:].any() and not g[4:9, :4].any()
    # the snapshot round trip works through both wrappers
    s = env.get_wrapper_attr("get_state")()
    assert set(names) <= set(s["objects"])
    a = record(env, np.ones(30, int))
    env.get_wrapper_attr("set_state")(s)
    assert_same_records(a, record(env, np.ones(30, int)))


def test_stacked_distractors_have_their_own_colours():
    env = DistractorObjects(DistractorObjects(gym.make(PLAIN, obs_mode="dict"), n=2), n=3)
    obs, _ = env.reset(seed=3)
    seen = []
    for j in range(4, 9):
        only = obs["masks"][j] & ~np.delete(obs["masks"], j, axis=0).any(0)
        assert only.any()
        seen.append(tuple(np.unique(obs["pixels"][only], axis=0)[0]))
    assert len(set(seen)) == 5


@pytest.mark.parametrize("regime", [r.id for r in REGIMES])
def test_distractors_compose_with_every_regime_and_background_order(regime):
    base = gym.make(f"InterventionalPong-{camel_name(REGIMES[regime])}-v0", obs_mode="dict")
    outside = BackgroundNoise(DistractorObjects(base, n=2), level="medium")
    base2 = gym.make(f"InterventionalPong-{camel_name(REGIMES[regime])}-v0", obs_mode="dict")
    inside = DistractorObjects(BackgroundNoise(base2, level="medium"), n=2)
    base3 = gym.make(f"InterventionalPong-{camel_name(REGIMES[regime])}-v0", obs_mode="dict")
    clean = DistractorObjects(base3, n=2)
    envs = (outside, inside, clean)
    for e in envs:
        assert e.get_wrapper_attr("graph_nodes")[4:6] == ("distractor_0", "distractor_1")
    obs = [e.reset(seed=regime)[0] for e in envs]
    rng = np.random.default_rng(regime)
    stats = dict.fromkeys(("white", "score", "trail", "overlap", "distractor"), 0)
    for _ in range(30):
        for o, e in zip(obs, envs, strict=True):
            check_frame(o, e, stats)
        # same objects and masks; the background sits behind the objects in both orders
        for o in obs[1:]:
            assert np.array_equal(o["objects"], obs[0]["objects"])
            assert np.array_equal(o["masks"], obs[0]["masks"])
        assert np.array_equal(obs[0]["pixels"], obs[1]["pixels"])
        inside_masks = obs[2]["masks"].any(0)
        assert np.array_equal(obs[0]["pixels"][inside_masks], obs[2]["pixels"][inside_masks])
        a = int(rng.integers(3))
        steps = [e.step(a) for e in envs]
        obs = [s[0] for s in steps]
        for s in steps:
            assert s[4]["regime"] == regime
            g = s[4]["local_graph"]
            assert g.shape == (8, 6) and np.array_equal(g[4:6, 4:], np.eye(2, dtype=bool))
            assert not g[4:6, :4].any() and not g[[0, 1, 2, 3, 6, 7], 4:].any()
        if any(s[2] or s[3] for s in steps):
            obs = [e.reset()[0] for e in envs]


def _background_run(level: str, dynamic: bool, seed: int, n: int = 40):
    """(frames of pixels, dict obs of the clean env) for a BackgroundNoise run."""
    env = BackgroundNoise(InterventionalPongEnv(obs_mode="dict"), level=level, dynamic=dynamic)
    clean = InterventionalPongEnv(obs_mode="dict")
    obs, _ = env.reset(seed=seed)
    cobs, _ = clean.reset(seed=seed)
    pairs = [(obs, cobs)]
    for t in range(n):
        a = t % 3
        obs, *_ = env.step(a)
        cobs, *_ = clean.step(a)
        pairs.append((obs, cobs))
    return env, pairs


@pytest.mark.parametrize("level", ["easy", "medium", "hard"])
@pytest.mark.parametrize("dynamic", [True, False])
def test_background_noise_leaves_objects_untouched(level, dynamic):
    env, pairs = _background_run(level, dynamic, seed=7)
    walls = wall_rows(32)
    background = seen = None
    changed = False
    for obs, cobs in pairs:
        assert np.array_equal(obs["objects"], cobs["objects"])
        assert np.array_equal(obs["masks"], cobs["masks"])
        inside = obs["masks"].any(0)
        assert np.array_equal(obs["pixels"][inside], cobs["pixels"][inside])
        assert np.all(obs["pixels"][walls & ~inside] == WALL_COLOUR)
        free = ~inside & ~walls
        assert (obs["pixels"][free] != 0).any()  # there is a background
        if background is not None and seen is not None:
            both = free & seen
            same = np.array_equal(obs["pixels"][both], background[both])
            changed |= not same
            if not dynamic:
                assert same, "a static background changed within the episode"
        background, seen = obs["pixels"].copy(), free
    assert changed == dynamic
    # static or not, a new episode gets a new background
    obs, _ = env.reset()
    inside = obs["masks"].any(0) | pairs[-1][0]["masks"].any(0) | walls
    assert not np.array_equal(obs["pixels"][~inside], pairs[-1][0]["pixels"][~inside])


def test_background_levels_grow_harder():
    means = []
    for level in ("easy", "medium", "hard"):
        vals = []
        for seed in range(3):
            _, pairs = _background_run(level, True, seed=seed, n=10)
            for obs, _ in pairs:
                free = ~obs["masks"].any(0) & ~wall_rows(32)
                vals.append(obs["pixels"][free].astype(float).mean())
        means.append(np.mean(vals))
    assert means[0] < means[1] < means[2]


def test_background_noise_in_pixels_and_objects_modes():
    _, pairs = _background_run("medium", True, seed=9, n=15)
    env = BackgroundNoise(InterventionalPongEnv(obs_mode="pixels"), level="medium")
    obs, _ = env.reset(seed=9)
    frames = [obs]
    for t in range(15):
        frames.append(env.step(t % 3)[0])
    for f, (d, _) in zip(frames, pairs, strict=True):
        assert f.dtype == np.uint8 and np.array_equal(f, d["pixels"])
    env = BackgroundNoise(InterventionalPongEnv(obs_mode="objects"), level="hard")
    clean = InterventionalPongEnv(obs_mode="objects")
    o, _ = env.reset(seed=1)
    c, _ = clean.reset(seed=1)
    assert np.array_equal(o, c) and env.observation_space == clean.observation_space


def test_background_noise_bad_level_names_the_allowed_ones():
    with pytest.raises(ValueError) as err:
        BackgroundNoise(InterventionalPongEnv(obs_mode="pixels"), level="extreme")
    for level in ("easy", "medium", "hard"):
        assert level in str(err.value)


def _noise_dims_rollout(seed: int, k: int, n: int = 120):
    env = NoiseDims(gym.make("Pendulum-v1"), k=k)
    plain = gym.make("Pendulum-v1")
    obs, _ = env.reset(seed=seed)
    pobs, _ = plain.reset(seed=seed)
    rng = np.random.default_rng(seed)
    out = [obs]
    for _ in range(n):
        assert env.observation_space.contains(obs)
        assert np.array_equal(obs[:-k], pobs)
        a = rng.uniform(-2.0, 2.0, (1,)).astype(np.float32)
        obs, *_ = env.step(a)
        pobs, *_ = plain.step(a)
        out.append(obs)
    return env, np.array(out)


def test_noise_dims_appends_random_walk_features():
    k = 3
    env, obs = _noise_dims_rollout(seed=0, k=k)
    base = gym.make("Pendulum-v1").observation_space
    space = env.observation_space
    assert isinstance(space, spaces.Box) and space.shape == (base.shape[0] + k,)
    assert space.dtype == base.dtype and obs.dtype == base.dtype
    assert np.array_equal(space.low[:-k], base.low) and np.array_equal(space.high[:-k], base.high)
    assert np.all(space.low[-k:] == -1) and np.all(space.high[-k:] == 1)
    extra = obs[:, -k:]
    assert np.all(np.abs(extra) <= 1.0)
    steps = np.abs(np.diff(extra, axis=0))
    assert np.all(steps.max(0) > 0)  # every feature moves
    # a random walk: small steps (sigma 0.1), but it wanders far over the episode
    assert 0.02 < steps.mean() < 0.2
    assert np.all(np.ptp(extra, axis=0) > 0.2)
    # the same seed repeats, another differs
    _, again = _noise_dims_rollout(seed=0, k=k)
    _, other = _noise_dims_rollout(seed=1, k=k)
    assert np.array_equal(obs, again) and not np.array_equal(obs[:, -k:], other[:, -k:])


@pytest.mark.parametrize("obs_mode", ["objects", "pixels", "dict"])
def test_noise_dims_needs_a_flat_box(obs_mode):
    with pytest.raises(ValueError):
        NoiseDims(InterventionalPongEnv(obs_mode=obs_mode), k=2)


def test_noise_dims_on_cartpole_and_bad_k():
    env = NoiseDims(gym.make("CartPole-v1"), k=2)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (6,) and np.all(np.abs(obs[-2:]) <= 1.0)
    with pytest.raises(ValueError):
        NoiseDims(gym.make("CartPole-v1"), k=0)


# --------------------------------------------------------------------------- 5. seeding
def rollout_records(env_id: str, obs_mode: str, seed: int, n: int = 150) -> list:
    env = gym.make(env_id, obs_mode=obs_mode, points_to_win=2)
    obs, info = env.reset(seed=seed)
    actions = np.random.default_rng(0).integers(0, 3, n)
    return [(copy.deepcopy(obs), "reset", info["regime"]), *record(env, actions)]


@pytest.mark.parametrize(
    ("env_id", "obs_mode"),
    [(PLAIN, "objects"), (PLAIN, "pixels"), (DISTRACT, "objects"), (DISTRACT, "pixels"),
     (DISTRACT, "dict")],
)  # fmt: skip
def test_same_seed_same_rollout_other_seed_differs(env_id, obs_mode):
    a = rollout_records(env_id, obs_mode, seed=21)
    b = rollout_records(env_id, obs_mode, seed=21)
    assert_same_records(a, b)
    c = rollout_records(env_id, obs_mode, seed=22)
    first_a, first_c = a[0][0], c[0][0]
    if isinstance(first_a, dict):
        first_a, first_c = first_a["pixels"], first_c["pixels"]
    assert not np.array_equal(first_a, first_c)
    if env_id == DISTRACT and obs_mode != "pixels":
        # the distractors themselves depend on the seed
        oa = a[0][0]["objects"] if obs_mode == "dict" else a[0][0]
        oc = c[0][0]["objects"] if obs_mode == "dict" else c[0][0]
        assert not np.array_equal(oa[4:], oc[4:])


def test_reseeding_the_same_env_repeats_the_rollout():
    env = gym.make(DISTRACT, obs_mode="dict", points_to_win=2, regime_schedule=2)
    actions = np.random.default_rng(3).integers(0, 3, 80)
    runs = []
    for _ in range(2):
        obs, _ = env.reset(seed=5)
        runs.append([(copy.deepcopy(obs), "reset", 0), *record(env, actions)])
    assert_same_records(runs[0], runs[1])
