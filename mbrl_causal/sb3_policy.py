"""World-model features for SB3 policies, and saving an SB3 model with its world model.

Public through :mod:`mbrl_causal.sb3`.
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Any

import gymnasium as gym
import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor

from mbrl_causal.io import write_atomic
from mbrl_causal.world_models.model import WorldModel

__all__ = ["ALGORITHMS", "CausalFeaturesExtractor", "load_sb3", "save_sb3", "world_model_path"]

ALGORITHMS: tuple[str, ...] = ("PPO", "A2C", "SAC", "TD3", "DDPG", "DQN")


class CausalFeaturesExtractor(BaseFeaturesExtractor):
    """Policy features: the world model's object tokens after its dynamics core, and the
    regime token (features_dim = (N + 1) x d_model).

    The tokens of a step are built as in :meth:`WorldModel.tokens` with a neutral action
    token (action 0, or a zero continuous action: the policy has not acted yet), passed
    through the core (SPARTAN's gated transformer or S2-SSM's blocks, one step from an
    empty state) and the output norm; the N object rows and the regime row are the
    features.

    Observations: a Box (N, 4) of object features (objects-mode world model); a Dict with
    ``objects`` (objects-mode model) or with ``pixels`` and ``masks`` (pixels-mode model,
    encoded by its VAE); a Dict may also carry ``regime`` (Discrete: the codebook id).

    Args:
        observation_space: The env's observation space (as SB3 passes it).
        world_model: The world model whose tokens are the features.
        freeze: True: the world model runs under no_grad in eval mode (deterministic
            gates) and the policy's optimiser never changes it; False: it is trained end
            to end by the policy's loss (gates sampled in training mode).
        regime: Regime when the observation has none: a codebook id, a float token
            (d_model,) (inferred or adapted), or None for the mean of the codebook.
        normalize_images: Whether SB3 divides images by 255 (the policy's
            ``normalize_images``, True by default).
    """

    def __init__(
        self,
        observation_space: gym.Space[Any],
        world_model: WorldModel,
        freeze: bool = True,
        regime: int | torch.Tensor | None = None,
        normalize_images: bool = True,
    ) -> None:
        mode = world_model.config.obs
        if isinstance(observation_space, gym.spaces.Dict):
            keys = set(observation_space.spaces)
            need = {"objects"} if mode == "objects" else {"pixels", "masks"}
            if not need <= keys:
                raise ValueError(f"a Dict observation for a {mode}-mode world model needs the "
                                 f"keys {sorted(need)}; got {sorted(keys)}")  # fmt: skip
            ref = observation_space.spaces["objects" if mode == "objects" else "masks"]
            n_objects = int(ref.shape[0])  # type: ignore[index]
        elif isinstance(observation_space, gym.spaces.Box) and mode == "objects":
            n_objects = int(observation_space.shape[0])
        else:
            raise ValueError(
                "observation_space must be a Box (N, 4) (objects-mode world model) or a Dict "
                f"with objects or pixels+masks; got {observation_space} for obs={mode!r}"
            )
        super().__init__(observation_space, (n_objects + 1) * world_model.config.d_model)
        self.world_model, self.freeze = world_model, bool(freeze)
        self.n_objects, self.normalize_images = n_objects, bool(normalize_images)
        self.regime: torch.Tensor | None = None
        self.set_regime(regime)

    def set_regime(self, regime: int | torch.Tensor | None) -> None:
        """The regime used when the observation carries none (see the class doc)."""
        if regime is None or torch.is_tensor(regime):
            self.regime = None if regime is None else regime.detach().reshape(1, -1)
        elif int(regime) in self.world_model.regime_ids:
            self.regime = torch.tensor([int(regime)])
        else:
            raise ValueError(f"regime {regime!r} is not in the codebook; allowed: "
                             f"{list(self.world_model.regime_ids)}, a token or None")  # fmt: skip

    def train(self, mode: bool = True) -> CausalFeaturesExtractor:
        super().train(mode)
        if self.freeze:
            self.world_model.eval()
        return self

    def _latents(self, obs: Any) -> torch.Tensor:
        wm = self.world_model
        if not isinstance(obs, dict):
            return obs.float()
        if wm.config.obs == "objects":
            return obs["objects"].float()
        px = obs["pixels"].float() * (255.0 if self.normalize_images else 1.0)
        if px.shape[-1] != 3:  # SB3 transposed the image to channel-first
            px = px.movedim(-3, -1)
        return wm.encode({"pixels": px[:, None], "masks": obs["masks"][:, None]})[:, 0]

    def _regime_tokens(self, obs: Any, batch: int) -> torch.Tensor:
        wm = self.world_model
        if isinstance(obs, dict) and "regime" in obs:
            ids = obs["regime"].reshape(batch, -1).argmax(-1)  # SB3 one-hot encodes Discrete
            return wm.regime_token(ids)
        if self.regime is None:
            return wm.codebook.weight.mean(0, keepdim=True).expand(batch, -1)
        if self.regime.is_floating_point():
            return self.regime.to(wm.codebook.weight.device).expand(batch, -1)
        return wm.regime_token(self.regime.to(wm.codebook.weight.device).expand(batch))

    def forward(self, observations: Any) -> torch.Tensor:
        wm = self.world_model
        with torch.no_grad() if self.freeze else nullcontext():
            z = self._latents(observations)
            b, n = z.shape[0], z.shape[1]
            if wm.discrete_actions:
                act = torch.zeros(b, 1, dtype=torch.long, device=z.device)
            else:
                act = torch.zeros(b, 1, wm.action_dim, device=z.device)
            x = wm.tokens(z[:, None], act, self._regime_tokens(observations, b))
            h = wm.out_norm(wm.core(x, n).h)[:, 0]  # (B, N + 2, d)
            return torch.cat([h[:, :n].flatten(1), h[:, n + 1]], 1)


def world_model_path(path: str | Path) -> Path:
    """``model.zip`` -> ``model.world_model.pt`` (the file beside the SB3 zip)."""
    p = Path(path)
    stem = p.name[: -len(".zip")] if p.name.endswith(".zip") else p.name
    return p.with_name(f"{stem}.world_model.pt")


def save_sb3(model: BaseAlgorithm, path: str | Path, world_model: WorldModel) -> tuple[Path, Path]:
    """Save an SB3 model as ``path.zip`` and its world model as ``path.world_model.pt``,
    both atomically; returns the two paths."""
    p = Path(path)
    zip_path = p if p.name.endswith(".zip") else p.with_name(p.name + ".zip")
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(zip_path, lambda t: model.save(t), ".zip")
    wm_path = world_model.save(world_model_path(zip_path))
    return zip_path, wm_path


def load_sb3(
    path: str | Path,
    algorithm: str | type[BaseAlgorithm],
    env: Any = None,
    device: str = "cpu",
    **kwargs: Any,
) -> tuple[BaseAlgorithm, WorldModel]:
    """Load what :func:`save_sb3` wrote: ``(sb3_model, world_model)``.

    Args:
        path: The zip (or the same path given to :func:`save_sb3`).
        algorithm: The SB3 class, or its name (``PPO``, ``A2C``, ``SAC``, ``TD3``,
            ``DDPG``, ``DQN``).
        env: Env to attach (e.g. a fresh :class:`~mbrl_causal.sb3.ImaginationVecEnv`).
        device: Torch device of both.
        kwargs: Passed to the algorithm's ``load``.
    """
    import stable_baselines3

    if isinstance(algorithm, str):
        if algorithm.upper() not in ALGORITHMS:
            raise ValueError(f"algorithm must be one of {ALGORITHMS}, got {algorithm!r}")
        cls: type[BaseAlgorithm] = getattr(stable_baselines3, algorithm.upper())
    else:
        cls = algorithm
    p = Path(path)
    zip_path = p if p.name.endswith(".zip") else p.with_name(p.name + ".zip")
    if not zip_path.is_file():
        raise ValueError(f"SB3 model file {str(zip_path)!r} does not exist")
    world_model = WorldModel.load(world_model_path(zip_path), map_location=device)
    model = cls.load(zip_path, env=env, device=device, **kwargs)
    return model, world_model
