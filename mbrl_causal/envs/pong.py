"""Interventional Pong: a Gymnasium env whose mechanisms change under interventions.

See ``shared/specs/interventional-pong.md`` (the contract) and :mod:`.physics` for the
dynamics. The agent plays the right paddle against a scripted opponent; every ``info``
carries the active regime and the ground-truth local causal graph of the transition.

Random numbers: every reset and every step consumes exactly one row of seven draws
(three normals: opponent, agent and ball noise; four uniforms: opponent random walk,
reset angle, reset side, regime choice), whatever happens in that step (the row also
carries the cosines and sines of the two angles, computed once per block). Rows are drawn from
``self.np_random`` in blocks of :data:`BLOCK` so that a counterfactual step sees the same
numbers, and the vector env reproduces the stream of each sub-env exactly.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from mbrl_causal.envs import physics as P
from mbrl_causal.envs.regimes import REGIMES, RegimeSchedule, regime_id
from mbrl_causal.envs.render import ALLOWED_SIZES, render_pong

__all__ = [
    "BLOCK",
    "GRAPH_NODES",
    "OBJECT_NAMES",
    "OBS_MODES",
    "InterventionalPongEnv",
]

OBJECT_NAMES: tuple[str, ...] = ("opponent", "agent", "ball", "score")
GRAPH_NODES: tuple[str, ...] = (*OBJECT_NAMES, "action", "regime")
OBS_MODES = ("objects", "pixels", "dict")
ACTION_TYPES = ("discrete", "continuous")
BLOCK = 256
OPP, AGENT, BALL, SCORE = range(4)
_POS = P.FIELD / 2.0  # features: (p - 16) / 16 for positions, v / 4 for velocities
_VEL = P.MAX_SPEED
_OPP_XF = (P.OPPONENT_X - _POS) / _POS
_AGENT_XF = (P.AGENT_X - _POS) / _POS
_DISCRETE_DIR = {0: 0.0, 1: -1.0, 2: 1.0}  # stay, up (towards y = 0), down


def check_choice(name: str, value: Any, allowed: tuple[Any, ...]) -> None:
    """Raise ValueError naming the allowed values when ``value`` is not one of them."""
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")


class InterventionalPongEnv(gym.Env):
    """Pong in which interventions change the game's mechanisms.

    Args:
        regime_schedule: Fixed regime (id or name), ``"cycle"``, ``"random"`` or a list of
            ``(episode, regime)`` pairs (see :class:`RegimeSchedule`).
        switch_every: Episodes between scheduled switches (``cycle``/``random``).
        switch_every_steps: Steps between switches inside episodes (overrides the above).
        obs_mode: ``"objects"`` (float32 (4, 4)), ``"pixels"`` (uint8 (S, S, 3)) or
            ``"dict"`` (``pixels``, ``objects``, bool ``masks`` (4, S, S)).
        action_type: ``"discrete"`` (0 stay, 1 up, 2 down) or ``"continuous"``
            (``Box(-1, 1, (1,))``, scaled to +-1.5 units per step; negative moves up).
        render_size: Frame size S in pixels: 32, 64 or 84.
        ball_trail: Draw the ball's previous position faintly in frames.
        points_to_win: Points that end the episode (terminated).
        noise_scale: Multiplies the paddle (0.1) and ball-direction (0.05) noise sigmas.
        observe_regime: Add ``"regime"`` (Discrete(11)) to a Dict observation.
        render_mode: None or ``"rgb_array"``.

    Example:
        >>> import gymnasium as gym, mbrl_causal.envs
        >>> env = gym.make("InterventionalPong-Gravity-v0")
        >>> obs, info = env.reset(seed=0)
        >>> obs.shape, info["regime"]
        ((4, 4), 1)
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 30}  # noqa: RUF012

    def __init__(
        self,
        regime_schedule: Any = "random",
        switch_every: int = 20,
        switch_every_steps: int | None = None,
        obs_mode: str = "objects",
        action_type: str = "discrete",
        render_size: int = 32,
        ball_trail: bool = True,
        points_to_win: int = 5,
        noise_scale: float = 1.0,
        observe_regime: bool = False,
        render_mode: str | None = None,
    ) -> None:
        check_choice("obs_mode", obs_mode, OBS_MODES)
        check_choice("action_type", action_type, ACTION_TYPES)
        check_choice("render_size", render_size, ALLOWED_SIZES)
        check_choice("render_mode", render_mode, (None, "rgb_array"))
        if (
            isinstance(points_to_win, bool)
            or not isinstance(points_to_win, int)
            or (points_to_win < 1)
        ):
            raise ValueError(f"points_to_win must be an int >= 1, got {points_to_win!r}")
        if not (isinstance(noise_scale, (int, float)) and math.isfinite(noise_scale)) or (
            noise_scale < 0
        ):
            raise ValueError(f"noise_scale must be a finite number >= 0, got {noise_scale!r}")
        self.schedule = RegimeSchedule(regime_schedule, switch_every, switch_every_steps)
        self.obs_mode = obs_mode
        self.action_type = action_type
        self.render_size = render_size
        self.ball_trail = bool(ball_trail)
        self.points_to_win = points_to_win
        self.noise_scale = float(noise_scale)
        self.observe_regime = bool(observe_regime)
        self.render_mode = render_mode
        self.regimes = REGIMES
        self.graph_nodes: tuple[str, ...] = GRAPH_NODES
        self.action_space: spaces.Space[Any]
        if action_type == "discrete":
            self.action_space = spaces.Discrete(3)
        else:
            self.action_space = spaces.Box(-1.0, 1.0, (1,), np.float32)
        self.observation_space = self.make_observation_space(len(OBJECT_NAMES))
        self._base_graph = np.zeros((len(GRAPH_NODES), len(OBJECT_NAMES)), bool)
        self._base_graph[np.arange(len(OBJECT_NAMES)), np.arange(len(OBJECT_NAMES))] = True
        self._base_graph[GRAPH_NODES.index("action"), AGENT] = True
        self._rows: tuple[tuple[float, ...], ...] = ()
        self._rows_array = np.zeros((0, P.ROW))  # the same block as an array, for snapshots
        self._row_i = 0
        self._regime: int | None = None
        self._prev_regime: int | None = None
        self._episode = -1
        self._episode_steps = 0
        self._total_steps = 0
        self._oy = self._ay = P.FIELD / 2.0
        self._ovy = self._avy = 0.0
        self._ball = (P.FIELD / 2.0, P.FIELD / 2.0, P.BASE_SPEED, 0.0)
        self._points = [0, 0]
        self._frame: tuple[np.ndarray, np.ndarray] | None = None

    # ------------------------------------------------------------------ spaces
    def make_observation_space(self, n_objects: int) -> spaces.Space[Any]:
        """The observation space for ``n_objects`` objects in this env's obs mode."""
        s = self.render_size
        objects = spaces.Box(-1.0, 1.0, (n_objects, 4), np.float32)
        pixels = spaces.Box(0, 255, (s, s, 3), np.uint8)
        space: dict[str, spaces.Space[Any]]
        if self.obs_mode == "objects":
            space = {"objects": objects}
        elif self.obs_mode == "pixels":
            space = {"pixels": pixels}
        else:
            masks = spaces.Box(0, 1, (n_objects, s, s), bool)  # type: ignore[arg-type]
            space = {"pixels": pixels, "objects": objects, "masks": masks}
        if self.observe_regime:
            space["regime"] = spaces.Discrete(len(REGIMES))
        elif self.obs_mode != "dict":
            return next(iter(space.values()))
        return spaces.Dict(space)

    # ------------------------------------------------------------------ random stream
    def _next_row(self) -> tuple[float, ...]:
        if self._row_i >= len(self._rows):
            block = P.draw_rows(self.np_random, self.noise_scale, BLOCK)
            block.flags.writeable = False
            self._rows_array = block
            self._rows = tuple(map(tuple, block.tolist()))
            self._row_i = 0
        row = self._rows[self._row_i]
        self._row_i += 1
        return row

    # ------------------------------------------------------------------ gym API
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        """Start an episode.

        ``options={"regime": id_or_name}`` sets the regime of this episode (a
        do-intervention; the schedule resumes at its next switch point, which for a fixed
        schedule is the next reset). Seeding reseeds
        the random stream only; the schedule's episode and step counters go on.
        ``info["regime_switched"]`` is always False here: a switch made at a reset is
        reported on the episode's first step, the first transition the new regime acts on.
        """
        super().reset(seed=seed)
        if seed is not None:
            self._rows, self._rows_array, self._row_i = (), np.zeros((0, P.ROW)), 0
        forced = None
        if options:
            unknown = set(options) - {"regime"}
            if unknown:
                raise ValueError(f"unknown reset options {sorted(unknown)}; allowed: ['regime']")
            if options.get("regime") is not None:
                forced = regime_id(options["regime"])
        row = self._next_row()
        self._episode += 1
        new = (
            forced
            if forced is not None
            else self.schedule.at_reset(self._episode, self._regime, row[P.U_REGIME])
        )
        if new is not None:
            self._regime = new
        self._oy = self._ay = P.FIELD / 2.0
        self._ovy = self._avy = 0.0
        self._ball = P.reset_ball(row[P.C_RESET], row[P.S_RESET], row[P.U_SIDE])
        self._points = [0, 0]
        self._episode_steps = 0
        self._frame = None
        # A switch is reported on the first step the new regime acts on, not here.
        info = {"regime": self._regime, "regime_switched": False}
        return self._observation(), info

    def _action_dir(self, action: Any) -> float:
        if self.action_type == "discrete":
            try:
                a = int(action)
            except (TypeError, ValueError):
                a = -1
            if a not in _DISCRETE_DIR or a != action:
                raise ValueError(f"action must be 0 (stay), 1 (up) or 2 (down), got {action!r}")
            return _DISCRETE_DIR[a]
        arr = np.asarray(action, dtype=np.float64).reshape(-1)
        if arr.shape != (1,) or not math.isfinite(arr[0]):
            raise ValueError(f"action must be a finite array of shape (1,), got {action!r}")
        return min(max(float(arr[0]), -1.0), 1.0)

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        """Advance one step; see the module docstring of :mod:`.physics` for the order."""
        if self._regime is None:
            raise gym.error.ResetNeeded("call reset() before step()")
        d = self._action_dir(action)
        row = self._next_row()
        regime = self._regime
        reg = REGIMES[regime]
        ns = self.noise_scale
        graph = self._base_graph.copy()
        n_obj = len(OBJECT_NAMES)

        # agent paddle: action (inverted under controls-inverted) plus noise
        noise = P.PADDLE_NOISE * ns * row[P.N_AGENT]
        ay = self._ay
        new_ay = P.clip_paddle(ay + P.AGENT_SPEED * d + noise)
        if reg.controls_inverted:
            new_ay, neutral = P.clip_paddle(ay + P.AGENT_SPEED * -d + noise), new_ay
            graph[n_obj + 1, AGENT] = new_ay != neutral

        # opponent paddle: tracks the ball at time t (or not, per regime)
        bx, by, bvx, bvy = self._ball
        oy = self._oy
        noise = P.PADDLE_NOISE * ns * row[P.N_OPPONENT]
        new_oy = P.clip_paddle(oy + P.opponent_move(reg.opponent, by, oy, row[P.U_WALK]) + noise)
        if reg.opponent != "track":
            neutral = P.clip_paddle(oy + P.opponent_move("track", by, oy, row[P.U_WALK]) + noise)
            graph[n_obj + 1, OPP] = new_oy != neutral
        graph[BALL, OPP] = reg.opponent != "random"

        # ball, with the paddles at time t
        c, s = row[P.C_NOISE], row[P.S_NOISE]
        out = P.ball_step(bx, by, bvx, bvy, oy, ay, reg.gravity, reg.curve, reg.friction, c, s)
        if reg.ball_changed:
            ref = P.ball_step(bx, by, bvx, bvy, oy, ay, False, False, False, c, s)
            graph[n_obj + 1, SCORE] = out[4] != ref[4]
            # after a point the ball restarts identically, so only "scored or not" matters
            scored, ref_scored = out[4] != P.EVENT_NONE, ref[4] != P.EVENT_NONE
            graph[n_obj + 1, BALL] = scored != ref_scored or (not scored and out[:4] != ref[:4])
        event = out[4]
        graph[AGENT, BALL] = out[5] > 0
        graph[OPP, BALL] = out[6] > 0
        graph[BALL, SCORE] = event != 0 or out[7]

        reward = 0.0
        if event == P.EVENT_NONE:
            self._ball = out[:4]
        else:
            self._ball = P.reset_ball(row[P.C_RESET], row[P.S_RESET], row[P.U_SIDE])
            idx = 1 if event == P.EVENT_AGENT_POINT else 0
            self._points[idx] = min(self._points[idx] + 1, self.points_to_win)
            reward = 1.0 if idx == 1 else -1.0
        self._avy, self._ay = new_ay - ay, new_ay
        self._ovy, self._oy = new_oy - oy, new_oy
        self._episode_steps += 1
        self._total_steps += 1
        if self.schedule.step_based:
            # Switch after the step that completes a block of switch_every_steps steps, so a
            # snapshot always holds the regime that acts in its next transition.
            new = self.schedule.at_step(self._total_steps, regime, row[P.U_REGIME])
            if new is not None:
                self._regime = new
        self._frame = None
        switched = self._prev_regime is not None and regime != self._prev_regime
        self._prev_regime = regime
        terminated = max(self._points) >= self.points_to_win
        info = {"regime": regime, "regime_switched": switched, "local_graph": graph}
        return self._observation(), reward, terminated, False, info

    # ------------------------------------------------------------------ observations
    def object_features(self) -> np.ndarray:
        """float32 (4, 4) object rows (see the spec, section 3), clipped to [-1, 1]."""
        bx, by, bvx, bvy = self._ball
        ptw = self.points_to_win
        obs = np.array(
            [
                (_OPP_XF, (self._oy - _POS) / _POS, 0.0, self._ovy / _VEL),
                (_AGENT_XF, (self._ay - _POS) / _POS, 0.0, self._avy / _VEL),
                ((bx - _POS) / _POS, (by - _POS) / _POS, bvx / _VEL, bvy / _VEL),
                (self._points[0] / ptw, self._points[1] / ptw, 0.0, 0.0),
            ],
            dtype=np.float32,
        )
        return np.clip(obs, -1.0, 1.0, out=obs)

    def frame_and_masks(self) -> tuple[np.ndarray, np.ndarray]:
        """The current frame (uint8 (S, S, 3)) and object masks (bool (4, S, S))."""
        if self._frame is None:
            img, masks = render_pong(
                self.render_size,
                np.array([self._oy]),
                np.array([self._ay]),
                np.array([self._ball]),
                np.array([self._points]),
                self.points_to_win,
                self.ball_trail,
            )
            self._frame = (img[0], masks[0])
        return self._frame

    def _observation(self) -> Any:
        mode = self.obs_mode
        if mode == "objects" and not self.observe_regime:
            return self.object_features()
        obs: dict[str, Any] = {}
        if mode in ("pixels", "dict"):
            img, masks = self.frame_and_masks()
            obs["pixels"] = img.copy()
            if mode == "dict":
                obs["objects"] = self.object_features()
                obs["masks"] = masks.copy()
        else:
            obs["objects"] = self.object_features()
        if self.observe_regime:
            obs["regime"] = np.int64(self._regime if self._regime is not None else 0)
        elif mode == "pixels":
            return obs["pixels"]
        return obs

    def render(self) -> np.ndarray | None:  # type: ignore[override]
        """The current frame (uint8 (S, S, 3)) when ``render_mode="rgb_array"``."""
        if self.render_mode is None:
            gym.logger.warn("render() called without render_mode; pass render_mode='rgb_array'")
            return None
        return self.frame_and_masks()[0].copy()

    # ------------------------------------------------------------------ interventions
    @property
    def regime(self) -> int | None:
        """The active regime id (None before the first reset)."""
        return self._regime

    def set_regime(self, regime: int | str) -> None:
        """Do-intervention: switch the regime now.

        It holds until the schedule's next switch point: the next reset for a fixed regime,
        the next scheduled switch for ``cycle``/``random``, the next episode for a list.
        ``info["regime_switched"]`` is True on the next step (compared with the regime of
        the previous step).
        """
        self._regime = regime_id(regime)

    def get_state(self) -> dict[str, Any]:
        """A complete, copyable snapshot (objects in field units, regime, RNG, counters).

        ``set_state(get_state())`` followed by the same action reproduces the transition
        bit for bit. A modified copy passed to :meth:`set_state` is a do-intervention on
        the variables changed. The TimeLimit wrapper's step counter is not part of it.
        """
        bx, by, bvx, bvy = self._ball
        return {
            "objects": {
                "opponent": {"y": self._oy, "vy": self._ovy},
                "agent": {"y": self._ay, "vy": self._avy},
                "ball": {"x": bx, "y": by, "vx": bvx, "vy": bvy},
                "score": {"opponent_points": self._points[0], "agent_points": self._points[1]},
            },
            "regime": self._regime,
            "rng": {
                "bit_generator": copy.deepcopy(self.np_random.bit_generator.state),
                "rows": self._rows_array,
                "row_index": self._row_i,
            },
            "counters": {
                "episode": self._episode,
                "episode_steps": self._episode_steps,
                "total_steps": self._total_steps,
                "previous_regime": self._prev_regime,
            },
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore a snapshot from :meth:`get_state` (or a modified copy of one).

        Raises:
            ValueError: if a key is missing or a value is not finite / out of range.
        """
        try:
            objs = state["objects"]
            o, a, b, s = objs["opponent"], objs["agent"], objs["ball"], objs["score"]
            values = [o["y"], o["vy"], a["y"], a["vy"], b["x"], b["y"], b["vx"], b["vy"]]
            points = [s["opponent_points"], s["agent_points"]]
            regime, rng, counters = state["regime"], state["rng"], state["counters"]
            rows, row_i = rng["rows"], rng["row_index"]
        except (KeyError, TypeError) as e:
            raise ValueError(f"not a snapshot from get_state(): missing {e}") from None
        floats = [float(v) for v in values]
        if not all(math.isfinite(v) for v in floats):
            raise ValueError(f"snapshot object variables must be finite, got {values}")
        for p in points:
            if isinstance(p, bool) or int(p) != p or not 0 <= p <= self.points_to_win:
                raise ValueError(
                    f"points must be integers in [0, {self.points_to_win}], got {points}"
                )
        # validate everything before writing anything: a bad snapshot changes nothing
        new_regime = None if regime is None else regime_id(regime)
        try:
            counts = [int(counters[k]) for k in ("episode", "episode_steps", "total_steps")]
            prev = counters["previous_regime"]
            prev = None if prev is None else regime_id(prev)
            block = np.array(rows, dtype=np.float64).reshape(-1, P.ROW)
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(
                f"not a snapshot from get_state(): bad counters or rows ({e})"
            ) from None
        self.np_random.bit_generator.state = copy.deepcopy(rng["bit_generator"])
        if rows is not self._rows_array:
            block.flags.writeable = False
            self._rows_array, self._rows = block, tuple(map(tuple, block.tolist()))
        self._row_i = int(row_i)
        self._oy, self._ovy, self._ay, self._avy = floats[:4]
        self._ball = (floats[4], floats[5], floats[6], floats[7])
        self._points = [int(p) for p in points]
        self._regime = new_regime
        self._episode, self._episode_steps, self._total_steps = counts
        self._prev_regime = prev
        self._frame = None
