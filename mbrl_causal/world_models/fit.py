"""``mbrl-causal fit``: collect data, train a world model, evaluate it, write JSON.

Steps (each with a progress bar on stderr):

1. collect training data on the chosen regimes (behaviour policy: random + tracking) and
   held-out data with other seeds (half validation, half test);
2. train the model (TensorBoard under ``OUT/tb``), pick the dense baselines' attention
   threshold on the validation half, evaluate on the test half: overall and per regime;
3. few-shot (composite regimes held out of training): fit a fresh regime token on
   K = 1, 2, 5, 10 trajectories of each composite regime and measure the next-step MSE
   on that regime's test data; the reference is the same network trained on the
   composite regimes' data (``few_shot_reference``);
4. robustness: train the same network on ``InterventionalPongDistractors-v0`` and report
   the % change of the prediction error on the real objects when the distractor objects
   are removed from the input (SPARTAN's Table 2 protocol);
5. save ``OUT/model.pt`` (atomically) and write ``OUT/fit.json`` (and ``--json FILE``).

JSON figures (all on held-out data): ``mse`` next-step MSE in latent space (objects
mode: per object feature, features scaled to about [-1, 1]; pixels mode: per VAE latent
entry), ``rollout_mse`` the mean MSE of an open-loop rollout of ``rollout_horizon`` steps,
``shd`` differing graph entries per transition, ``precision``/``recall`` of edges,
``edges``/``true_edges`` per transition; ``per_edge["parent->child"]`` fractions of test
transitions with that edge ``true``, ``predicted``, ``fp``, ``fn``;
``few_shot[regime][K]`` MSE after adapting on K trajectories;
``robustness.error_change_pct`` = 100 (mse_without - mse_with) / mse_with;
``train_seconds`` wall seconds of the main model's training.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from mbrl_causal.envs.regimes import REGIMES
from mbrl_causal.io import write_atomic, write_json
from mbrl_causal.world_models.adaptation import fit_regime_token, recall_regime
from mbrl_causal.world_models.config import FitConfig, WorldModelConfig
from mbrl_causal.world_models.data import TransitionData, collect, parse_regimes
from mbrl_causal.world_models.diagnostics import edge_diagnostics
from mbrl_causal.world_models.model import WorldModel
from mbrl_causal.world_models.training import (
    check_dense_reference,
    choose_threshold,
    evaluate,
    rollout_mse,
    train,
)

__all__ = ["DISTRACTOR_ENV", "FitRun", "fit"]

DISTRACTOR_ENV = "InterventionalPongDistractors-v0"
GRAPH_KEYS = ("mse", "shd", "precision", "recall", "edges")


@dataclasses.dataclass
class FitRun:
    """Where and how one ``fit`` runs (the two configs plus run-level choices)."""

    model: WorldModelConfig
    fit: FitConfig
    seed: int = 0
    out: Path = Path("runs/fit")
    show_progress: bool = True


class _Progress:
    """A rich progress bar with one task at a time (silent when disabled)."""

    def __init__(self, enabled: bool) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
            console=Console(stderr=True),
            disable=not enabled,
            transient=False,
        )

    def __enter__(self) -> _Progress:
        self.bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.__exit__(None, None, None)

    def task(self, description: str, total: int) -> Callable[..., None]:
        tid = self.bar.add_task(description, total=total, info="")

        def advance(n: int = 1, info: str | None = None) -> None:
            if info is None:
                self.bar.update(tid, advance=n)
            else:
                self.bar.update(tid, advance=n, info=info)

        return advance


def _collect(
    run: FitRun, env: str, regimes: list[int], steps: int, seed: int, bar: _Progress, what: str
) -> TransitionData:
    f = run.fit
    advance = bar.task(f"collect {what}", steps)
    return collect(
        env,
        regimes,
        steps,
        seed,
        f.num_envs,
        run.model.obs,
        f.random_fraction,
        progress=lambda n: advance(n),
    )


def _train(
    run: FitRun,
    data: TransitionData,
    regimes: list[int],
    steps: int,
    bar: _Progress,
    what: str,
    writer: Any = None,
) -> WorldModel:
    f = run.fit
    model = WorldModel(run.model, regimes)
    sample = data.sampler(
        f.seq_len, f.batch_size, np.random.default_rng([run.seed, 7]), run.model.obs
    )
    advance = bar.task(f"train {what}", steps)

    def on_step(step: int, last: dict[str, float]) -> None:
        info = (
            f"mse {last['world_model/mse']:.2e} edges {last['causal/edges']:.2f} "
            f"lambda {last['causal/lambda']:.1e}"
            if last
            else ""
        )
        advance(1, info)

    log = None if writer is None else writer.add_scalar
    train(
        model,
        sample,
        steps,
        f.lr,
        f.grad_clip,
        run.seed,
        log=log,
        log_every=f.log_every,
        on_step=on_step,
        reference=f.tau_reference == "dense",
    )
    return model


def _split(data: TransitionData) -> tuple[TransitionData, TransitionData]:
    """Validation and test halves (alternate rows, so both hold every regime)."""
    rows = np.arange(data.objects.shape[0])
    return data.select_rows(rows[0::2]), data.select_rows(rows[1::2])


def _per_regime(model: WorldModel, test: TransitionData, run: FitRun) -> dict[str, Any]:
    out = {}
    for rid in sorted(set(test.regimes.tolist())):
        part = test.select_rows(np.flatnonzero(test.regimes == rid))
        out[REGIMES[rid].name] = _keys(evaluate(model, part, run.model.obs, run.fit.seq_len))
    return out


def _keys(figures: dict[str, float]) -> dict[str, float]:
    return {k: figures[k] for k in (*GRAPH_KEYS, "true_edges", "reward_mse")}


def _few_shot(run: FitRun, model: WorldModel, env: str, bar: _Progress) -> dict[str, Any]:
    f, obs = run.fit, run.model.obs
    held_out = [r.id for r in REGIMES if not r.simple and r.id not in model.regime_ids]
    if not held_out:
        return {}
    kmax, length = max(f.few_shot_ks), f.few_shot_traj_len
    reference = None
    if f.few_shot_reference:
        ref_data = _collect(
            run,
            env,
            held_out,
            f.data_steps,
            run.seed + 30_000,
            bar,
            "reference data (composite regimes)",
        )
        reference = _train(run, ref_data, held_out, f.train_steps, bar, "reference model")
    result: dict[str, Any] = {}
    advance = bar.task("few-shot adaptation", len(held_out) * len(f.few_shot_ks))
    for rid in held_out:
        adapt, starts = _adaptation_windows(run, env, rid, kmax, length)
        test = collect(
            env,
            [rid],
            f.eval_steps // 2,
            run.seed + 50_000 + rid,
            f.num_envs,
            obs,
            f.random_fraction,
        )
        curve: dict[str, Any] = {}
        for k in f.few_shot_ks:
            batch = adapt.batch(starts[:k], length, obs)
            token = fit_regime_token(model, batch, f.few_shot_steps)
            curve[str(k)] = evaluate(model, test, obs, f.seq_len, regime=token)["mse"]
            advance(1)
        recalled = recall_regime(model, adapt.batch(starts[: min(5, kmax)], length, obs))
        curve["recall_regime"] = REGIMES[recalled].name
        curve["recall_mse"] = evaluate(
            model, test, obs, f.seq_len, regime=model.regime_token(torch.tensor([recalled]))
        )["mse"]
        if reference is not None:
            curve["reference_mse"] = evaluate(reference, test, obs, f.seq_len)["mse"]
            if "5" in curve:
                curve["ratio_5_to_reference"] = curve["5"] / curve["reference_mse"]
        result[REGIMES[rid].name] = curve
    return result


def _one_window_per_row(data: TransitionData, length: int) -> np.ndarray:
    starts = data.window_starts(length)
    _, first = np.unique(starts[:, 0], return_index=True)
    return starts[first]


def _adaptation_windows(
    run: FitRun, env: str, rid: int, k: int, length: int, tries: int = 4
) -> tuple[TransitionData, np.ndarray]:
    """k sub-envs' data of regime ``rid`` with one ``length``-step window (no episode end
    inside) in each row; the budget per sub-env doubles while an episode end leaves a row
    without one."""
    f = run.fit
    per_env = length + 40
    for _ in range(tries):
        adapt = collect(
            env, [rid], k * per_env, run.seed + 40_000 + rid, k, run.model.obs, f.random_fraction
        )
        starts = _one_window_per_row(adapt, length)
        if len(starts) >= k:
            return adapt, starts[:k]
        per_env *= 2
    raise ValueError(
        f"only {len(starts)} of {k} adaptation trajectories of {length} steps could be "
        f"collected in {REGIMES[rid].name} with {per_env // 2} steps per sub-env (episodes "
        "end sooner); lower few_shot_traj_len"
    )


def _robustness(run: FitRun, regimes: list[int], bar: _Progress) -> dict[str, Any]:
    f, obs = run.fit, run.model.obs
    data = _collect(
        run, DISTRACTOR_ENV, regimes, f.data_steps, run.seed + 60_000, bar, "distractor data"
    )
    test = _collect(
        run,
        DISTRACTOR_ENV,
        regimes,
        f.eval_steps // 2,
        run.seed + 70_000,
        bar,
        "distractor test data",
    )
    model = _train(run, data, regimes, f.robustness_train_steps, bar, "distractor model")
    choose_threshold(model, test, obs, f.seq_len)
    n_real = 4  # opponent, agent, ball, score: the distractors come after them
    with_d = evaluate(model, test, obs, f.seq_len)
    real_only = evaluate(model, test, obs, f.seq_len, objects=n_real)
    with_real = _real_object_mse(model, test, obs, f.seq_len, n_real)
    return {
        "env": DISTRACTOR_ENV,
        "mse_with_distractors": with_real,
        "mse_without_distractors": real_only["mse"],
        "error_change_pct": 100.0 * (real_only["mse"] - with_real) / with_real,
        "shd_with_distractors": with_d["shd"],
    }


@torch.no_grad()
def _real_object_mse(
    model: WorldModel, data: TransitionData, obs: str, length: int, n_real: int
) -> float:
    """Prediction MSE on the real objects only, with the distractors in the input."""
    from mbrl_causal.world_models.training import eval_starts

    model.eval()
    starts, total, count = eval_starts(data, length), 0.0, 0
    for i in range(0, len(starts), 64):
        b = data.batch(starts[i : i + 64], length, obs)
        z = model.encode(b.obs)
        out = model(z[:, :-1], b.actions, b.regimes)
        err = (out.next_latent[:, :, :n_real] - z[:, 1:, :n_real]).square().mean()
        total += float(err) * len(z)
        count += len(z)
    return total / count


def fit(run: FitRun, env: str | None = None) -> dict[str, Any]:
    """Run the whole ``fit`` command; returns the JSON record (also written to OUT)."""
    import gymnasium as gym
    from torch.utils.tensorboard import SummaryWriter

    import mbrl_causal.envs  # noqa: F401  (registers the ids)

    f = run.fit
    env = env or f.env
    if env not in gym.registry:  # checked before anything is written
        raise ValueError(f"unknown env id {env!r}; `mbrl-causal envs` lists them")
    if f.tau_reference == "dense":
        check_dense_reference(run.model)
    if f.threads:
        torch.set_num_threads(f.threads)
    torch.manual_seed(run.seed)
    regimes = parse_regimes(f.regimes)
    probe = gym.make(env)
    nodes = list(probe.get_wrapper_attr("graph_nodes"))
    probe.close()
    run.out.mkdir(parents=True, exist_ok=True)
    config = {"model": run.model.to_dict(), "fit": f.to_dict(), "seed": run.seed, "env": env}
    write_atomic(
        run.out / "config.yaml",
        lambda p: p.write_text(yaml.safe_dump(config, sort_keys=False)),
        ".yaml",
    )
    writer = SummaryWriter(str(run.out / "tb"))
    try:
        with _Progress(run.show_progress) as bar:
            data = _collect(run, env, regimes, f.data_steps, run.seed, bar, "training data")
            held = _collect(
                run, env, regimes, f.eval_steps, run.seed + 10_000, bar, "held-out data"
            )
            val, test = _split(held)
            t0 = time.perf_counter()
            model = _train(run, data, regimes, f.train_steps, bar, run.model.name, writer)
            seconds = time.perf_counter() - t0
            threshold = choose_threshold(model, val, run.model.obs, f.seq_len)
            overall = evaluate(model, test, run.model.obs, f.seq_len, node_names=nodes)
            overall["rollout_mse"] = rollout_mse(model, test, run.model.obs, f.rollout_horizon)
            record: dict[str, Any] = {
                "world_model": run.model.name,
                "obs": run.model.obs,
                "env": env,
                "overall": {**_keys(overall), "rollout_mse": overall["rollout_mse"]},
                "per_regime": _per_regime(model, test, run),
                "per_edge": overall["per_edge"],
                "diagnostics": edge_diagnostics(model, test, run.model.obs, f.seq_len, nodes),
                "graph_threshold": None if run.model.sparse else threshold,
                "train_seconds": seconds,
            }
            model.save(run.out / "model.pt", extra={"overall": record["overall"]})
            try:
                record["few_shot"] = _few_shot(run, model, env, bar)
                record["robustness"] = _robustness(run, regimes, bar) if f.robustness else None
            except ValueError as e:  # say what is left in OUT (the trained model, no JSON)
                raise ValueError(
                    f"{e}. The trained model is kept in {run.out / 'model.pt'}; "
                    "fit.json was not written"
                ) from e
    finally:
        writer.close()
    record["config"] = config
    write_json(run.out / "fit.json", record)
    return record


def summary_table(record: dict[str, Any]) -> Any:
    """A rich table of the overall and per-regime figures of a fit record."""
    from rich.table import Table

    table = Table(title=f"{record['world_model']} ({record['obs']}) on held-out data")
    for col in ("regime", "mse", "shd", "precision", "recall", "edges", "true edges"):
        table.add_column(col, justify="right" if col != "regime" else "left")
    rows = [("overall", record["overall"]), *record["per_regime"].items()]
    for name, r in rows:
        table.add_row(
            name,
            f"{r['mse']:.2e}",
            f"{r['shd']:.3f}",
            f"{r['precision']:.3f}",
            f"{r['recall']:.3f}",
            f"{r['edges']:.2f}",
            f"{r['true_edges']:.2f}",
        )
    return table
