"""Actor and critic trained on imagined rollouts of the world model (DreamerV3 recipe).

The policy's input (its "features") is the world model's object latents, flattened,
next to the regime token it acts under: ``concat(z.flatten(), token)``. So the policy of
a regime is selected by the same token that selects the dynamics, and an adapted token
(few-shot) changes both.

Departures from DreamerV3, for a small CPU-sized agent (documented in the README):

- the critic regresses the lambda-return with a squared error (no two-hot symlog
  distribution): Pong returns are within [-5, 5];
- imagination restarts the S2-SSM recurrent state at each start state (the world models
  here are Markov in the object latents; SPARTAN has no recurrent state at all);
- continuous actions are a tanh-squashed Gaussian with reparameterised gradients through
  the world model; the entropy bonus uses the Gaussian's entropy before the squash.
"""

from __future__ import annotations

import copy
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from mbrl_causal.agents.dreamer.losses import ReturnNormalizer, lambda_returns
from mbrl_causal.world_models.model import WorldModel
from mbrl_causal.world_models.training import NonFiniteLoss, clip_gradients

__all__ = ["ActorCritic", "ImaginationLoss", "RealSequences", "features"]

LOG_STD_MIN, LOG_STD_MAX = -5.0, 1.0


def features(latents: torch.Tensor, token: torch.Tensor) -> torch.Tensor:
    """Policy input (B, N * L + d) from object latents (B, N, L) and tokens (B, d)."""
    return torch.cat([latents.flatten(1), token], -1)


def _mlp(d_in: int, hidden: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(d_in, hidden), nn.LayerNorm(hidden), nn.SiLU(),
        nn.Linear(hidden, hidden), nn.LayerNorm(hidden), nn.SiLU(),
        nn.Linear(hidden, d_out),
    )  # fmt: skip


class ImaginationLoss(NamedTuple):
    """Figures of one actor-critic update (TensorBoard ``actor_critic/*``)."""

    actor_loss: float
    critic_loss: float
    entropy: float  # nats per action
    imag_return: float  # mean lambda-return of the start states (reward units)
    imag_reward: float  # mean predicted reward per imagined step
    value: float  # mean critic value
    return_scale: float  # the normaliser's divisor (>= 1)
    replay_critic_loss: float  # 0.5 x squared error of the critic on real lambda-returns


class RealSequences(NamedTuple):
    """Replayed real sequences for the critic's replay value loss (batch-major)."""

    feats: torch.Tensor  # (B, T + 1, F) features of o_0..o_T
    rewards: torch.Tensor  # (B, T) r_1..r_T
    conts: torch.Tensor  # (B, T) c_1..c_T (0 after a terminal step)


class ActorCritic(nn.Module):
    """Actor, critic and slow critic with their optimisers.

    Args:
        feat_dim: Size of :func:`features`.
        action_dim: Discrete actions, or the size of a continuous action.
        discrete: Categorical (REINFORCE) or tanh-Gaussian (reparameterised) actor.
        config: The agent config (learning rates, gamma, lambda, entropy, ...).
    """

    def __init__(self, feat_dim: int, action_dim: int, discrete: bool, config: Any) -> None:
        super().__init__()
        self.config, self.discrete, self.action_dim = config, discrete, action_dim
        self.actor = _mlp(feat_dim, config.hidden, action_dim if discrete else 2 * action_dim)
        self.critic = _mlp(feat_dim, config.hidden, 1)
        self.slow_critic = copy.deepcopy(self.critic).requires_grad_(False)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=config.actor_lr, eps=1e-5)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=config.critic_lr, eps=1e-5)
        self.normalizer = ReturnNormalizer(config.return_norm_decay)

    # ------------------------------------------------------------------ policy
    def _dist(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.actor(feats)
        if self.discrete:
            return out, out.new_zeros(())
        mean, log_std = out.chunk(2, -1)
        return mean, log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)

    def act(
        self,
        feats: torch.Tensor,
        generator: torch.Generator | None = None,
        deterministic: bool = False,
    ) -> torch.Tensor:
        """Actions (B,) int64 or (B, A) in [-1, 1] for features (B, F)."""
        a, _, _ = self._sample(feats, generator, deterministic)
        return a

    def _sample(
        self, feats: torch.Tensor, generator: torch.Generator | None, deterministic: bool
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Action, its log-probability (discrete) and the entropy, per row."""
        p1, p2 = self._dist(feats)
        if self.discrete:
            logp = F.log_softmax(p1, -1)
            probs = logp.exp()
            if deterministic:
                a = probs.argmax(-1)
            else:
                a = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
            ent = -(probs * logp).sum(-1)
            return a, logp.gather(-1, a[:, None]).squeeze(-1), ent
        std = p2.exp()
        if deterministic:
            pre = p1
        else:
            eps = torch.randn(p1.shape, generator=generator, dtype=p1.dtype, device=p1.device)
            pre = p1 + std * eps  # reparameterised
        ent = (0.5 * (1 + torch.log(torch.tensor(2 * torch.pi))) + p2).sum(-1)
        return torch.tanh(pre), p1.new_zeros(p1.shape[0]), ent

    # ------------------------------------------------------------------ imagination
    def imagine(
        self,
        model: WorldModel,
        latents: torch.Tensor,
        tokens: torch.Tensor,
        generator: torch.Generator | None,
    ) -> dict[str, torch.Tensor]:
        """Roll the (frozen) world model H steps from latents (S, N, L) under the actor."""
        h = self.config.horizon
        feats, logps, ents, rewards, conts = [], [], [], [], []
        state, z = None, latents
        grad = not self.discrete  # reparameterised gradients flow through the model
        with torch.set_grad_enabled(grad):
            for _ in range(h):
                f = features(z, tokens)
                a, logp, ent = self._sample(f if grad else f.detach(), generator, False)
                if self.discrete:
                    with torch.enable_grad():  # log-prob and entropy need the actor's grad
                        _, logp, ent = self._logp(f.detach(), a)
                out, state = model.step(z, a, tokens, state)
                feats.append(f)
                logps.append(logp)
                ents.append(ent)
                rewards.append(out.reward[:, 0])
                conts.append(torch.sigmoid(out.cont_logit[:, 0]))
                z = out.next_latent[:, 0]
            feats.append(features(z, tokens))
        return {
            "feats": torch.stack(feats),  # (H + 1, S, F)
            "logp": torch.stack(logps),  # (H, S)
            "entropy": torch.stack(ents),  # (H, S)
            "reward": torch.stack(rewards),  # (H, S): r_1..r_H
            "cont": torch.stack(conts),  # (H, S): c_1..c_H
        }

    def _logp(
        self, feats: torch.Tensor, actions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logits, _ = self._dist(feats)
        logp = F.log_softmax(logits, -1)
        ent = -(logp.exp() * logp).sum(-1)
        return actions, logp.gather(-1, actions[:, None]).squeeze(-1), ent

    def replay_returns(self, real: RealSequences) -> tuple[torch.Tensor, torch.Tensor]:
        """Critic values v_0..v_{T-1} (T, B) of replayed states and their lambda-returns.

        The targets bootstrap from the slow critic and use the real rewards and
        continuation flags; they are off-policy (the replay's actions), as in DreamerV3's
        replay value loss, which anchors the critic to real returns where imagination
        drifts.
        """
        c = self.config
        feats = real.feats.transpose(0, 1)  # (T + 1, B, F)
        with torch.no_grad():
            slow = self.slow_critic(feats).squeeze(-1)
            target = lambda_returns(
                real.rewards.T.float(), real.conts.T.float(), slow, c.gamma, c.lambda_
            )
        return self.critic(feats[:-1]).squeeze(-1), target

    def update(
        self,
        model: WorldModel,
        latents: torch.Tensor,
        tokens: torch.Tensor,
        generator: torch.Generator | None = None,
        real: RealSequences | None = None,
    ) -> ImaginationLoss:
        """One actor and one critic step on rollouts from ``latents`` (S, N, L).

        ``real``: replayed sequences for the replay value loss (weight
        ``config.replay_critic_weight``; skipped when None or the weight is 0).

        Raises:
            FloatingPointError: a loss is NaN/inf (the update is skipped, weights intact).
        """
        c = self.config
        was_training = model.training
        flags = [p.requires_grad for p in model.parameters()]
        model.eval()  # deterministic gates in imagination
        model.requires_grad_(False)
        try:
            roll = self.imagine(model, latents.detach(), tokens.detach(), generator)
        finally:
            for p, f in zip(model.parameters(), flags, strict=True):
                p.requires_grad_(f)
            model.train(was_training)
        feats = roll["feats"]
        with torch.no_grad():
            values = self.critic(feats.detach()).squeeze(-1)  # (H + 1, S)
            slow = self.slow_critic(feats.detach()).squeeze(-1)
            weight = torch.cumprod(
                torch.cat([torch.ones_like(roll["cont"][:1]), roll["cont"][:-1]]), 0
            )
        returns = lambda_returns(roll["reward"], roll["cont"], values, c.gamma, c.lambda_)
        prev_norm = self.normalizer.state_dict()
        scale = self.normalizer.update(returns)
        if self.discrete:
            adv = ((returns - values[:-1]) / scale).detach()
            actor_obj = roll["logp"] * adv
        else:  # returns carry gradients through the model: maximise them directly
            returns_g = lambda_returns(
                roll["reward"], roll["cont"], self.critic(feats).squeeze(-1), c.gamma, c.lambda_
            )
            actor_obj = returns_g / scale
        actor_loss = -(weight * (actor_obj + c.entropy * roll["entropy"])).mean()
        v = self.critic(feats[:-1].detach()).squeeze(-1)
        target = returns.detach()
        critic_loss = (
            weight * (0.5 * (v - target) ** 2 + c.slow_critic_weight * 0.5 * (v - slow[:-1]) ** 2)
        ).mean()
        replay_loss = critic_loss.new_zeros(())
        if real is not None and c.replay_critic_weight > 0:
            v_real, target_real = self.replay_returns(real)
            replay_loss = 0.5 * (v_real - target_real).square().mean()
            critic_loss = critic_loss + c.replay_critic_weight * replay_loss
        for name, loss in (("actor", actor_loss), ("critic", critic_loss)):
            if not torch.isfinite(loss):
                self.normalizer.load_state_dict(prev_norm)  # a refused update changes nothing
                raise FloatingPointError(
                    f"actor-critic loss term {name!r} is {loss.item()}; the update was "
                    "skipped (lower the learning rates or check the world model)"
                )
        self.actor_opt.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.critic_opt.zero_grad(set_to_none=True)  # drops what the actor's loss put there
        critic_loss.backward()
        try:
            clip_gradients(self.actor, c.grad_clip, "actor")
            clip_gradients(self.critic, c.grad_clip, "critic")
        except NonFiniteLoss as e:
            self.normalizer.load_state_dict(prev_norm)
            self.actor.zero_grad(set_to_none=True)
            raise FloatingPointError(str(e)) from None
        self.actor_opt.step()
        self.critic_opt.step()
        with torch.no_grad():
            d = c.slow_critic_decay
            for ps, p in zip(self.slow_critic.parameters(), self.critic.parameters(), strict=True):
                ps.mul_(d).add_(p.detach(), alpha=1 - d)
        return ImaginationLoss(
            actor_loss.item(), critic_loss.item(), roll["entropy"].mean().item(),
            float(returns[0].mean()), float(roll["reward"].mean()), float(values.mean()), scale,
            replay_loss.item(),
        )  # fmt: skip

    # ------------------------------------------------------------------ state
    def full_state(self) -> dict[str, Any]:
        return {
            "modules": self.state_dict(),
            "actor_opt": self.actor_opt.state_dict(),
            "critic_opt": self.critic_opt.state_dict(),
            "normalizer": self.normalizer.state_dict(),
        }

    def load_full_state(self, state: dict[str, Any]) -> None:
        self.load_state_dict(state["modules"])
        self.actor_opt.load_state_dict(state["actor_opt"])
        self.critic_opt.load_state_dict(state["critic_opt"])
        self.normalizer.load_state_dict(state["normalizer"])
