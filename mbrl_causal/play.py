"""``mbrl-causal play``: run episodes with a scripted policy, report returns and switches.

Per episode it prints the return (sum of rewards: +1 per agent point, -1 per opponent
point), the length in steps, the final score and the regime switches seen (the step of
the episode on which a new regime first acted, with the old and new regime). ``--video DIR`` writes
``DIR/episode_<k>.<mp4|gif>`` at 30 frames/s, upscaled (nearest neighbour) to at least
256 pixels a side; files are written atomically.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
from pathlib import Path
from typing import Any

import numpy as np

from mbrl_causal.config import EnvConfig, from_mapping, load_yaml, parse_overrides

__all__ = ["EpisodeResult", "cmd_play", "resolve_env_config", "run_episodes"]


@dataclasses.dataclass
class EpisodeResult:
    """One played episode."""

    episode: int
    return_: float
    length: int
    score: tuple[int, int]
    """(opponent points, agent points) at the end."""
    regimes: list[int]
    """Regimes in force during the episode, in order."""
    switches: list[dict[str, int | None]]
    """``{"step", "from", "to"}`` for each switch: the step (1-based, in the episode) on
    which the new regime first acted, the previous step's regime and the new one."""


def resolve_env_config(env: str, overrides: list[str]) -> EnvConfig:
    """An :class:`EnvConfig` from ``--env`` (registered id or preset YAML) and ``--set``."""
    from mbrl_causal.envs import ENV_IDS

    if env.endswith((".yaml", ".yml")) or Path(env).is_file():
        cfg = load_yaml(EnvConfig, env)
    else:
        cfg = EnvConfig(id=env)
    data = {**dataclasses.asdict(cfg), **parse_overrides(overrides)}
    cfg = from_mapping(EnvConfig, data, where="env config")
    if cfg.id not in ENV_IDS:
        raise ValueError(f"unknown env id {cfg.id!r}; allowed: {', '.join(ENV_IDS)}")
    if cfg.extra:
        _check_extra(cfg)
    return cfg


def _check_extra(cfg: EnvConfig) -> None:
    from mbrl_causal.envs.distractors import make_distractor_pong
    from mbrl_causal.envs.pong import InterventionalPongEnv

    allowed = set(inspect.signature(InterventionalPongEnv).parameters)
    if cfg.id.startswith("InterventionalPongDistractors"):
        allowed |= set(inspect.signature(make_distractor_pong).parameters) - {"kwargs"}
    unknown = sorted(set(cfg.extra) - allowed)
    if unknown:
        raise ValueError(
            f"unknown env argument(s) {unknown}; allowed: {', '.join(sorted(allowed))}"
        )


def run_episodes(
    cfg: EnvConfig,
    episodes: int,
    policy: str = "random",
    seed: int = 0,
    record: bool = False,
    on_step: Any = None,
) -> tuple[list[EpisodeResult], list[list[np.ndarray]]]:
    """Play ``episodes`` episodes; return the results and, if ``record``, the frames."""
    from mbrl_causal.envs.policies import make_policy

    env = cfg.make(render_mode="rgb_array" if record else None)
    act = make_policy(policy, env, seed)
    results, videos = [], []
    regime = None  # the regime of the previous step, across episodes
    for k in range(episodes):
        obs, info = env.reset(seed=seed if k == 0 else None)
        res = EpisodeResult(k, 0.0, 0, (0, 0), [info["regime"]], [])
        frames = [env.render()] if record else []
        done = False
        while not done:
            obs, reward, terminated, truncated, info = env.step(act(obs))
            res.return_ += float(reward)
            res.length += 1
            if info["regime_switched"]:
                res.switches.append({"step": res.length, "from": regime, "to": info["regime"]})
                if info["regime"] != res.regimes[-1]:
                    res.regimes.append(info["regime"])
            regime = info["regime"]
            if record:
                frames.append(env.render())
            if on_step is not None:
                on_step()
            done = terminated or truncated
        score = env.get_wrapper_attr("get_state")()["objects"]["score"]
        res.score = (score["opponent_points"], score["agent_points"])
        results.append(res)
        videos.append(frames)
    env.close()
    return results, videos


def _upscale(frame: np.ndarray) -> np.ndarray:
    k = max(1, -(-256 // frame.shape[0]))
    return np.repeat(np.repeat(frame, k, axis=0), k, axis=1)


def write_video(path: Path, frames: list[np.ndarray], fmt: str, fps: int = 30) -> None:
    """Write frames to an MP4 or GIF file atomically."""
    import imageio.v3 as iio

    from mbrl_causal.io import write_atomic

    big = np.stack([_upscale(f) for f in frames])
    if fmt == "gif":
        write_atomic(path, lambda t: iio.imwrite(t, big, extension=".gif",
                                                  duration=1000 / fps, loop=0), ".gif")  # fmt: skip
    else:
        write_atomic(path, lambda t: _write_mp4(t, big, fps), ".mp4")


def _write_mp4(path: Path, frames: np.ndarray, fps: int) -> None:
    import imageio.v2 as iio2

    writer = iio2.get_writer(path, format="FFMPEG", fps=fps, codec="libx264", quality=8,
                             macro_block_size=1)  # fmt: skip
    try:
        for f in frames:
            writer.append_data(f)
    finally:
        writer.close()


def _video_dir(path: str) -> Path:
    from mbrl_causal.io import UsageError

    p = Path(path)
    if p.exists() and not p.is_dir():
        raise UsageError(f"--video {path!r} is a file; give a folder for the videos")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot create the video folder {path!r}: {e.strerror}") from None
    return p


def cmd_play(args: argparse.Namespace) -> None:
    """The ``play`` command."""
    from rich.console import Console
    from rich.progress import Progress

    from mbrl_causal.envs.regimes import REGIMES
    from mbrl_causal.io import output_file, write_json

    cfg = resolve_env_config(args.env, args.set)
    video_dir = _video_dir(args.video) if args.video else None
    if args.json:
        output_file(args.json)
    console = Console()
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(f"playing {cfg.id}", total=None)
        results, videos = run_episodes(
            cfg, args.episodes, args.policy, args.seed, record=video_dir is not None,
            on_step=lambda: progress.advance(task),
        )  # fmt: skip
    for r in results:
        names = " -> ".join(REGIMES[x].name for x in r.regimes)
        sw = ", ".join(f"step {s['step']}: {s['from']}->{s['to']}" for s in r.switches) or "none"
        console.print(
            f"episode {r.episode}: return {r.return_:+.0f}, {r.length} steps, score "
            f"{r.score[0]}-{r.score[1]} (opponent-agent), regime {names}; switches: {sw}"
        )
    returns = [r.return_ for r in results]
    console.print(f"mean return {np.mean(returns):+.2f} over {len(results)} episode(s)")
    if video_dir is not None:
        for r, frames in zip(results, videos, strict=True):
            path = video_dir / f"episode_{r.episode}.{args.video_format}"
            write_video(path, frames, args.video_format)
            console.print(f"wrote {path}")
    if args.json:
        write_json(args.json, [dataclasses.asdict(r) for r in results])
