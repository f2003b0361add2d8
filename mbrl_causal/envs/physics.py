"""Interventional Pong dynamics, once for Python floats and once batched in NumPy.

The single env steps with plain Python floats (fast for one env); the vector env steps
NumPy arrays of shape ``(N,)``. Both use only IEEE-exact operations (+, -, *, /, sqrt,
comparisons, min/max) and the same polynomial :func:`cos_sin`, evaluated in the same order,
so a sub-env of the vector env and a single env with the same seed agree bit for bit.

Units are field units (the field is 32 x 32, y grows downwards). One step of the world:

    paddles_t, ball_t, score_t, regime_t, action_t, noise_t
        |-> agent_{t+1}    = f(agent_t, action_t, regime_t, noise)
        |-> opponent_{t+1} = f(opponent_t, ball_t, regime_t, noise)
        |-> ball_{t+1}     = f(ball_t, paddles_t, regime_t, noise)   (hits use paddles at t)
        |-> score_{t+1}    = f(score_t, ball_{t+1} crossing x = 1 or x = 31)

Collisions use the paddles at time t, so the action never reaches the ball in one step and
the local graph of spec section 5 holds exactly.

Ball motion (choices where the spec is silent, documented in the README):
  1. direction noise: rotate (vx, vy) by N(0, 0.05 * noise_scale) rad, clipped to +-0.4 rad;
  2. regime: gravity vy += 0.15; curve rotates by 0.12 rad; friction x0.92 if 10 < x < 22;
  3. the direction is kept within +-60 degrees of horizontal (speed preserved), and the
     speed within [0.5, 4.0] (friction's floor; a ceiling below the paddle's 4.4-unit hit
     zone, so the ball never tunnels through a paddle);
  4. move, reflect off the walls (ball edge at y = 2 and y = 30);
  5. hits: a ball moving towards a paddle whose centre lies within 1 + r of the paddle in
     x and 3 + r in y (paddle at time t) is returned at base speed with the angle
     ``clip((y - paddle_y) / 3, -1, 1) * 60 deg``;
  6. a point is scored when the centre leaves x in [1, 31]; the ball restarts at the
     centre at base speed, direction within +-45 degrees of horizontal, random side.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

# ---------------------------------------------------------------- world constants (spec 1)
FIELD = 32.0
WALL_TOP = 2.0
WALL_BOTTOM = 30.0
OPPONENT_X = 5.0
AGENT_X = 27.0
PADDLE_HALF_W = 1.0
PADDLE_HALF_H = 3.0
PADDLE_Y_MIN = 5.0
PADDLE_Y_MAX = 27.0
BALL_RADIUS = 1.2
BASE_SPEED = 2.0
MIN_SPEED = 0.5
MAX_SPEED = 4.0
AGENT_SPEED = 1.5
OPPONENT_SPEED = 1.2
PADDLE_NOISE = 0.1
BALL_NOISE = 0.05
BALL_NOISE_CLIP = 0.4
SCORE_X_MIN = 1.0
SCORE_X_MAX = 31.0
GRAVITY = 0.15
CURVE = 0.12
FRICTION = 0.92
FRICTION_BAND = (10.0, 22.0)
MAX_ANGLE = math.pi / 3.0
RESET_ANGLE = math.pi / 4.0
TAN_MAX = math.sqrt(3.0)
SIN_MAX = math.sqrt(3.0) / 2.0
COS_MAX = 0.5
# Ball centre limits: the ball's edge touches the wall there.
BALL_Y_MIN = WALL_TOP + BALL_RADIUS
BALL_Y_MAX = WALL_BOTTOM - BALL_RADIUS
# Hit zones (ball centre), from the paddle's front face minus r to its back face plus r.
AGENT_ZONE = (AGENT_X - PADDLE_HALF_W - BALL_RADIUS, AGENT_X + PADDLE_HALF_W + BALL_RADIUS)
OPPONENT_ZONE = (
    OPPONENT_X - PADDLE_HALF_W - BALL_RADIUS,
    OPPONENT_X + PADDLE_HALF_W + BALL_RADIUS,
)
HIT_HALF_H = PADDLE_HALF_H + BALL_RADIUS
# The perturbation size of the local-graph definition (spec 5a). Event edges (a hit or a
# point that a +-GRAPH_EPS change of the parent would flip) are marked within this margin.
GRAPH_EPS = 1e-3

# Indices into one row of the per-step random draws (drawn up front, spec 1): three
# normals, four uniforms, then cos/sin of the ball's noise angle and of the reset angle,
# precomputed per block (the trigonometry is the costly part of a batched step).
N_OPPONENT, N_AGENT, N_BALL, U_WALK, U_ANGLE, U_SIDE, U_REGIME = range(7)
C_NOISE, S_NOISE, C_RESET, S_RESET = range(7, 11)
N_NORMAL = 3
N_UNIFORM = 4
ROW = 11

# Ball outcome events.
EVENT_NONE, EVENT_AGENT_POINT, EVENT_OPPONENT_POINT = 0, 1, -1


def cos_sin(a: Any) -> tuple[Any, Any]:
    """cos and sin by Taylor polynomials, for floats or arrays, |a| <= pi/2 (error < 1e-15).

    Only + and * are used, in a fixed order, so Python floats and NumPy arrays give
    bit-identical results (libm's and NumPy's SIMD trigonometry may differ in the last bit).

    >>> c, s = cos_sin(0.5); round(c, 12), round(s, 12)
    (0.87758256189, 0.479425538604)
    """
    a2 = a * a
    s = 1.0 - a2 / 342.0
    for d in (272.0, 210.0, 156.0, 110.0, 72.0, 42.0, 20.0, 6.0):
        s = 1.0 - a2 / d * s
    c = 1.0 - a2 / 306.0
    for d in (240.0, 182.0, 132.0, 90.0, 56.0, 30.0, 12.0, 2.0):
        c = 1.0 - a2 / d * c
    return c, a * s


CURVE_COS, CURVE_SIN = cos_sin(CURVE)


def draw_rows(rng: np.random.Generator, noise_scale: float, n: int) -> np.ndarray:
    """``n`` rows of per-step draws with their derived cos/sin columns, float64 (n, ROW)."""
    normals = rng.standard_normal((n, N_NORMAL))
    uniforms = rng.random((n, N_UNIFORM))
    angle = np.minimum(
        np.maximum(BALL_NOISE * noise_scale * normals[:, N_BALL], -BALL_NOISE_CLIP),
        BALL_NOISE_CLIP,
    )
    cn, sn = cos_sin(angle)
    cr, sr = cos_sin((2.0 * uniforms[:, U_ANGLE - N_NORMAL] - 1.0) * RESET_ANGLE)
    return np.concatenate([normals, uniforms, np.stack([cn, sn, cr, sr], 1)], axis=1)


# ------------------------------------------------------------------ scalar (single env)
def _clamp_direction(vx: float, vy: float) -> tuple[float, float]:
    if abs(vy) > TAN_MAX * abs(vx):
        s = math.sqrt(vx * vx + vy * vy)
        vx = s * COS_MAX if vx >= 0.0 else -(s * COS_MAX)
        vy = s * SIN_MAX if vy > 0.0 else -(s * SIN_MAX)
    return vx, vy


def ball_step(
    x: float,
    y: float,
    vx: float,
    vy: float,
    opponent_y: float,
    agent_y: float,
    gravity: bool,
    curve: bool,
    friction: bool,
    c: float,
    s: float,
) -> tuple[float, float, float, float, int, int, int, bool]:
    """One ball step (Python floats), before any reset after a point.

    Returns:
        ``(x, y, vx, vy, event, agent_contact, opponent_contact, near_score)`` where
        ``event`` is ``EVENT_*``, a contact is 2 for a hit, 1 for a near miss that a
        +-GRAPH_EPS move of the paddle would turn into a hit, else 0, and ``near_score``
        says a +-GRAPH_EPS move of the ball would score a point that was not scored.
        ``c, s`` are the cosine and sine of the direction-noise angle.
    """
    vx, vy = c * vx - s * vy, s * vx + c * vy
    vx, vy = _clamp_direction(vx, vy)
    if gravity:
        vy = vy + GRAVITY
    if curve:
        vx, vy = CURVE_COS * vx - CURVE_SIN * vy, CURVE_SIN * vx + CURVE_COS * vy
    if friction and FRICTION_BAND[0] < x < FRICTION_BAND[1]:
        vx = vx * FRICTION
        vy = vy * FRICTION
    vx, vy = _clamp_direction(vx, vy)
    speed = math.sqrt(vx * vx + vy * vy)
    if speed > MAX_SPEED:
        f = MAX_SPEED / speed
        vx = vx * f
        vy = vy * f
    elif speed < MIN_SPEED:
        f = MIN_SPEED / speed
        vx = vx * f
        vy = vy * f
    x = x + vx
    y = y + vy
    if y < BALL_Y_MIN:
        y = 2.0 * BALL_Y_MIN - y
        vy = abs(vy)
    elif y > BALL_Y_MAX:
        y = 2.0 * BALL_Y_MAX - y
        vy = -abs(vy)
    agent_contact = opponent_contact = 0
    if vx > 0.0 and AGENT_ZONE[0] <= x <= AGENT_ZONE[1]:
        dy = y - agent_y
        if abs(dy) <= HIT_HALF_H:
            agent_contact = 2
            off = min(max(dy / PADDLE_HALF_H, -1.0), 1.0)
            c, s = cos_sin(off * MAX_ANGLE)
            vx = -(BASE_SPEED * c)
            vy = BASE_SPEED * s
            x = AGENT_ZONE[0]
        elif abs(dy) <= HIT_HALF_H + GRAPH_EPS:
            agent_contact = 1
    elif vx < 0.0 and OPPONENT_ZONE[0] <= x <= OPPONENT_ZONE[1]:
        dy = y - opponent_y
        if abs(dy) <= HIT_HALF_H:
            opponent_contact = 2
            off = min(max(dy / PADDLE_HALF_H, -1.0), 1.0)
            c, s = cos_sin(off * MAX_ANGLE)
            vx = BASE_SPEED * c
            vy = BASE_SPEED * s
            x = OPPONENT_ZONE[1]
        elif abs(dy) <= HIT_HALF_H + GRAPH_EPS:
            opponent_contact = 1
    event = EVENT_NONE
    near = False
    if x > SCORE_X_MAX:
        event = EVENT_OPPONENT_POINT
    elif x < SCORE_X_MIN:
        event = EVENT_AGENT_POINT
    else:
        near = x > SCORE_X_MAX - GRAPH_EPS or x < SCORE_X_MIN + GRAPH_EPS
    return x, y, vx, vy, event, agent_contact, opponent_contact, near


def reset_ball(c: float, s: float, u_side: float) -> tuple[float, float, float, float]:
    """Ball at the centre, base speed, angle within +-45 deg (cos c, sin s), random side."""
    side = 1.0 if u_side < 0.5 else -1.0
    return FIELD / 2.0, FIELD / 2.0, side * BASE_SPEED * c, BASE_SPEED * s


def clip_paddle(y: float) -> float:
    """Clip a paddle centre to [5, 27]."""
    return min(max(y, PADDLE_Y_MIN), PADDLE_Y_MAX)


def opponent_move(mode: str, ball_y: float, opponent_y: float, u_walk: float) -> float:
    """Opponent displacement before noise: track, inverted (away) or random walk."""
    if mode == "random":
        return OPPONENT_SPEED * (2.0 * u_walk - 1.0)
    dy = ball_y - opponent_y
    m = min(abs(dy), OPPONENT_SPEED)
    track = m if dy > 0.0 else (-m if dy < 0.0 else 0.0)
    return -track if mode == "inverted" else track


# ------------------------------------------------------------------ batched (vector env)
def _clamp_direction_batch(vx: np.ndarray, vy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    steep = np.abs(vy) > TAN_MAX * np.abs(vx)
    s = np.sqrt(vx * vx + vy * vy)
    cx = np.where(vx >= 0.0, s * COS_MAX, -(s * COS_MAX))
    cy = np.where(vy > 0.0, s * SIN_MAX, -(s * SIN_MAX))
    return np.where(steep, cx, vx), np.where(steep, cy, vy)


def ball_step_batch(
    x: np.ndarray,
    y: np.ndarray,
    vx: np.ndarray,
    vy: np.ndarray,
    opponent_y: np.ndarray,
    agent_y: np.ndarray,
    gravity: np.ndarray,
    curve: np.ndarray,
    friction: np.ndarray,
    c: np.ndarray,
    s: np.ndarray,
) -> tuple[np.ndarray, ...]:
    """:func:`ball_step` for arrays of shape (N,); regime flags are bool arrays."""
    vx, vy = c * vx - s * vy, s * vx + c * vy
    vx, vy = _clamp_direction_batch(vx, vy)
    vy = np.where(gravity, vy + GRAVITY, vy)
    cvx = CURVE_COS * vx - CURVE_SIN * vy
    cvy = CURVE_SIN * vx + CURVE_COS * vy
    vx = np.where(curve, cvx, vx)
    vy = np.where(curve, cvy, vy)
    band = friction & (x > FRICTION_BAND[0]) & (x < FRICTION_BAND[1])
    vx = np.where(band, vx * FRICTION, vx)
    vy = np.where(band, vy * FRICTION, vy)
    vx, vy = _clamp_direction_batch(vx, vy)
    speed = np.sqrt(vx * vx + vy * vy)  # > 0: the clamp keeps |vx| >= speed / 2
    fast = speed > MAX_SPEED
    slow = speed < MIN_SPEED
    f = np.where(fast, MAX_SPEED / speed, np.where(slow, MIN_SPEED / speed, 1.0))
    scaled = fast | slow
    vx = np.where(scaled, vx * f, vx)
    vy = np.where(scaled, vy * f, vy)
    x = x + vx
    y = y + vy
    top = y < BALL_Y_MIN
    bottom = y > BALL_Y_MAX
    y = np.where(top, 2.0 * BALL_Y_MIN - y, np.where(bottom, 2.0 * BALL_Y_MAX - y, y))
    vy = np.where(top, np.abs(vy), np.where(bottom, -np.abs(vy), vy))

    in_agent = (vx > 0.0) & (x >= AGENT_ZONE[0]) & (x <= AGENT_ZONE[1])
    in_opp = (vx < 0.0) & (x >= OPPONENT_ZONE[0]) & (x <= OPPONENT_ZONE[1])
    dya = y - agent_y
    dyo = y - opponent_y
    hit_a = in_agent & (np.abs(dya) <= HIT_HALF_H)
    hit_o = in_opp & (np.abs(dyo) <= HIT_HALF_H)
    near_a = in_agent & ~hit_a & (np.abs(dya) <= HIT_HALF_H + GRAPH_EPS)
    near_o = in_opp & ~hit_o & (np.abs(dyo) <= HIT_HALF_H + GRAPH_EPS)
    hit = hit_a | hit_o
    if hit.any():  # the outgoing angle, for the envs that hit only
        idx = np.flatnonzero(hit)
        dy = np.where(hit_a, dya, dyo)[idx]
        off = np.minimum(np.maximum(dy / PADDLE_HALF_H, -1.0), 1.0)
        if idx.size <= 16:  # few hits: scalar polynomials beat per-call array overhead
            pairs = [cos_sin(a) for a in (off * MAX_ANGLE).tolist()]
            hc = np.array([p[0] for p in pairs])
            hs = np.array([p[1] for p in pairs])
        else:
            hc, hs = cos_sin(off * MAX_ANGLE)
        ha = hit_a[idx]
        vx = vx.copy()
        vy = vy.copy()
        x = x.copy()
        vx[idx] = np.where(ha, -(BASE_SPEED * hc), BASE_SPEED * hc)
        vy[idx] = BASE_SPEED * hs
        x[idx] = np.where(ha, AGENT_ZONE[0], OPPONENT_ZONE[1])
    agent_contact = np.where(hit_a, 2, np.where(near_a, 1, 0))
    opponent_contact = np.where(hit_o, 2, np.where(near_o, 1, 0))

    right = x > SCORE_X_MAX
    left = x < SCORE_X_MIN
    event = np.where(right, EVENT_OPPONENT_POINT, np.where(left, EVENT_AGENT_POINT, EVENT_NONE))
    near = ~right & ~left & ((x > SCORE_X_MAX - GRAPH_EPS) | (x < SCORE_X_MIN + GRAPH_EPS))
    return x, y, vx, vy, event, agent_contact, opponent_contact, near


def reset_ball_batch(
    c: np.ndarray, s: np.ndarray, u_side: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`reset_ball` for arrays."""
    side = np.where(u_side < 0.5, 1.0, -1.0)
    centre = np.full_like(c, FIELD / 2.0)
    return centre, centre.copy(), side * BASE_SPEED * c, BASE_SPEED * s


def clip_paddle_batch(y: np.ndarray) -> np.ndarray:
    """:func:`clip_paddle` for arrays."""
    return np.minimum(np.maximum(y, PADDLE_Y_MIN), PADDLE_Y_MAX)


def opponent_move_batch(
    inverted: np.ndarray, random: np.ndarray, ball_y: np.ndarray, opponent_y: np.ndarray,
    u_walk: np.ndarray,
) -> np.ndarray:  # fmt: skip
    """:func:`opponent_move` for arrays; ``inverted``/``random`` are bool arrays."""
    dy = ball_y - opponent_y
    m = np.minimum(np.abs(dy), OPPONENT_SPEED)
    track = np.where(dy > 0.0, m, np.where(dy < 0.0, -m, 0.0))
    walk = OPPONENT_SPEED * (2.0 * u_walk - 1.0)
    return np.where(random, walk, np.where(inverted, -track, track))
