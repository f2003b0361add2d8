"""Batched rasteriser for Interventional Pong frames and object masks.

One implementation serves the single env (N = 1), the vector env and the wrappers, so
pixels and masks agree everywhere. A pixel belongs to a shape when its centre, in field
units ``((col + 0.5) * 32 / S, (row + 0.5) * 32 / S)``, lies inside the shape:

- paddles: the 2 x 6 rectangle around their centre;
- ball: a disc of radius 1.2; its trail (``ball_trail=True``) is a disc of the same radius
  at the previous position ``(x - vx, y - vy)`` drawn faintly; both are the ball's pixels;
- score: two bars in the strip above the top wall, the opponent's growing rightwards from
  x = 1 and the agent's leftwards from x = 31, each 14 units long at ``points_to_win``;
- walls: the rows whose centres lie in y in [1, 2) and [30, 31) (not an object; no mask).

A mask is an object's footprint (every pixel its shapes cover); where objects overlap the
later one in the drawing order (score, opponent, agent, ball trail, ball, distractors) is
the colour seen.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mbrl_causal.envs import physics as P

ALLOWED_SIZES = (32, 64, 84)
BACKGROUND = np.array([0, 0, 0], np.uint8)
WALL_COLOUR = np.array([90, 90, 140], np.uint8)
OBJECT_COLOURS = {
    "opponent": np.array([230, 70, 70], np.uint8),
    "agent": np.array([70, 210, 70], np.uint8),
    "ball": np.array([255, 255, 255], np.uint8),
    "trail": np.array([110, 110, 110], np.uint8),
    "score": np.array([235, 200, 50], np.uint8),
}
DISTRACTOR_COLOURS = np.array(
    [[70, 120, 255], [220, 80, 220], [60, 220, 220], [255, 150, 40], [160, 100, 60],
     [150, 150, 255], [255, 120, 160], [120, 255, 160]],
    np.uint8,
)  # fmt: skip
SCORE_BAR = 14.0


@dataclass(frozen=True)
class Grid:
    """Pixel-centre coordinates (field units) for one render size."""

    size: int
    centres: np.ndarray
    wall_rows: np.ndarray
    score_rows: np.ndarray
    opponent_cols: np.ndarray
    agent_cols: np.ndarray


_GRIDS: dict[int, Grid] = {}


def grid(size: int) -> Grid:
    """The cached :class:`Grid` for a render size (32, 64 or 84)."""
    if size not in _GRIDS:
        if size not in ALLOWED_SIZES:
            raise ValueError(f"render_size must be one of {ALLOWED_SIZES}, got {size!r}")
        c = (np.arange(size) + 0.5) * (P.FIELD / size)
        walls = ((c >= 1.0) & (c < 2.0)) | ((c >= 30.0) & (c < 31.0))
        _GRIDS[size] = Grid(
            size=size,
            centres=c,
            wall_rows=walls,
            score_rows=c < 1.0,
            opponent_cols=np.abs(c - P.OPPONENT_X) <= P.PADDLE_HALF_W,
            agent_cols=np.abs(c - P.AGENT_X) <= P.PADDLE_HALF_W,
        )
    return _GRIDS[size]


def disc_masks(g: Grid, x: np.ndarray, y: np.ndarray, r: float) -> np.ndarray:
    """Bool (N, S, S) masks of discs centred at (x, y) (field units)."""
    dx = g.centres[None, :] - x[:, None]
    dy = g.centres[None, :] - y[:, None]
    return (dy * dy)[:, :, None] + (dx * dx)[:, None, :] <= r * r


def background(n: int, size: int) -> np.ndarray:
    """Empty frames with the walls drawn, uint8 (N, S, S, 3)."""
    g = grid(size)
    img = np.zeros((n, size, size, 3), np.uint8)
    img[:, g.wall_rows] = WALL_COLOUR
    return img


def render_pong(
    size: int,
    opponent_y: np.ndarray,
    agent_y: np.ndarray,
    ball: np.ndarray,
    points: np.ndarray,
    points_to_win: int,
    ball_trail: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """Frames and masks of the four Pong objects.

    Args:
        size: Render size S.
        opponent_y, agent_y: (N,) paddle centres.
        ball: (N, 4) ball x, y, vx, vy.
        points: (N, 2) opponent and agent points.
        points_to_win: Points that fill a score bar.
        ball_trail: Draw the previous ball position faintly.

    Returns:
        ``(pixels, masks)``: uint8 (N, S, S, 3) and bool (N, 4, S, S) in the order
        opponent, agent, ball, score.
    """
    g = grid(size)
    n = opponent_y.shape[0]
    c = g.centres
    img = background(n, size)
    masks = np.empty((n, 4, size, size), bool)
    bar = points.astype(np.float64) * (SCORE_BAR / points_to_win)
    opp_cols = (c[None, :] >= P.SCORE_X_MIN) & (c[None, :] < P.SCORE_X_MIN + bar[:, :1])
    agent_cols = (c[None, :] <= P.SCORE_X_MAX) & (c[None, :] > P.SCORE_X_MAX - bar[:, 1:])
    masks[:, 3] = g.score_rows[None, :, None] & (opp_cols | agent_cols)[:, None, :]
    rows = np.abs(c[None, :] - opponent_y[:, None]) <= P.PADDLE_HALF_H
    masks[:, 0] = rows[:, :, None] & g.opponent_cols[None, None, :]
    rows = np.abs(c[None, :] - agent_y[:, None]) <= P.PADDLE_HALF_H
    masks[:, 1] = rows[:, :, None] & g.agent_cols[None, None, :]
    ball_disc = disc_masks(g, ball[:, 0], ball[:, 1], P.BALL_RADIUS)
    img[masks[:, 3]] = OBJECT_COLOURS["score"]
    img[masks[:, 0]] = OBJECT_COLOURS["opponent"]
    img[masks[:, 1]] = OBJECT_COLOURS["agent"]
    if ball_trail:
        trail = disc_masks(g, ball[:, 0] - ball[:, 2], ball[:, 1] - ball[:, 3], P.BALL_RADIUS)
        img[trail] = OBJECT_COLOURS["trail"]
        masks[:, 2] = ball_disc | trail
    else:
        masks[:, 2] = ball_disc
    img[ball_disc] = OBJECT_COLOURS["ball"]
    return img, masks


def draw_discs(
    img: np.ndarray, x: np.ndarray, y: np.ndarray, radius: float, first_colour: int = 0
) -> np.ndarray:
    """Draw K discs per frame in the distractor colours, in place.

    Disc j gets colour ``first_colour + j`` of :data:`DISTRACTOR_COLOURS` (cycled).

    Args:
        img: uint8 (N, S, S, 3) frames, modified in place.
        x, y: (N, K) disc centres (field units).
        radius: Disc radius (field units).

    Returns:
        bool (N, K, S, S) masks of the discs.
    """
    g = grid(img.shape[1])
    n, k = x.shape
    masks = disc_masks(g, x.reshape(-1), y.reshape(-1), radius).reshape(n, k, g.size, g.size)
    for j in range(k):
        img[masks[:, j]] = DISTRACTOR_COLOURS[(first_colour + j) % len(DISTRACTOR_COLOURS)]
    return masks
