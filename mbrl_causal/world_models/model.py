"""The world model: encoder, tokens, a dynamics core, heads, regime codebook, losses.

One class serves the four names (``spartan``, ``s2ssm``, ``dense-transformer``,
``dense-ssm``): they differ in the core (:class:`SpartanCore` or :class:`S2SSMCore`) and
in the gate (on or off). Time alignment of a training sequence::

    obs       o_0   o_1   o_2  ...  o_T         (T + 1 observations)
    action    a_0   a_1   a_2  ...  a_{T-1}
    reward          r_1   r_2  ...  r_T         (reward of the step o_{t-1}, a_{t-1} -> o_t)
    cont            c_1   c_2  ...  c_T         (0 where o_t is terminal, 1 otherwise)
    graph     G_0   G_1   ...  G_{T-1}          (G_t: parents at t of the objects at t+1)

The tokens of step t are the N object latents of o_t (through a per-object MLP plus a
learned per-position object embedding), the action token of a_t and the regime token; the
model predicts the latents of o_{t+1} (residually: ``z_{t+1} = z_t + out(h_t)``), r_{t+1}
and c_{t+1} (from the mean of the object tokens), and the graph G_t.

Regime tokens come from a codebook with one entry per training regime
(``regime_ids`` maps env regime ids to entries); any (B, d_model) tensor can be passed
instead (a fitted free token: :mod:`.adaptation`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from mbrl_causal.io import write_atomic
from mbrl_causal.world_models.config import WorldModelConfig, stored_world_model_config
from mbrl_causal.world_models.encoders import MaskedImageVAE, ObjectFeatureEncoder
from mbrl_causal.world_models.gates import HardGate, fix_structure, graph_from_paths, path_matrix
from mbrl_causal.world_models.s2ssm import S2SSMCore
from mbrl_causal.world_models.spartan import MLP, CoreOutput, SpartanCore

__all__ = ["FORMAT", "LossTerms", "SequenceBatch", "WorldModel", "WorldModelOutput"]

FORMAT = "mbrl-causal-world-model"
FORMAT_VERSION = 1
MAX_OBJECTS = 16


class SequenceBatch(NamedTuple):
    """A batch of B sequences of T transitions (see the module's time alignment).

    ``obs`` is a float tensor (B, T + 1, N, 4) in objects mode, or ``{"pixels": uint8
    (B, T + 1, H, W, 3), "masks": bool (B, T + 1, N, H, W)}`` in pixels mode.
    """

    obs: Any
    actions: torch.Tensor  # (B, T) int64, or (B, T, A) float
    rewards: torch.Tensor  # (B, T) float
    conts: torch.Tensor  # (B, T) float in {0, 1}
    regimes: torch.Tensor  # (B,) env regime ids
    graphs: torch.Tensor  # (B, T, N + 2, N) bool, ground truth


class WorldModelOutput(NamedTuple):
    """Predictions for tokens of T steps.

    Attributes:
        next_latent: Predicted object latents of the next step (B, T, N, latent_dim): the
            "next object tokens" (= next object features in objects mode).
        reward: Predicted reward (B, T).
        cont_logit: Continuation logit (B, T) (sigmoid: probability the episode goes on).
        graph: Local graph (B, T, N + 2, N) bool, parents x children.
        paths: Path matrix (B, T, M, M) (M = N + 2), differentiable in training.
        attention: Per layer, head-averaged attention weights (B, T, M, M).
    """

    next_latent: torch.Tensor
    reward: torch.Tensor
    cont_logit: torch.Tensor
    graph: torch.Tensor
    paths: torch.Tensor
    attention: list[torch.Tensor]


class LossTerms(NamedTuple):
    """The objective and its terms (scalars); ``total`` is what is minimised."""

    total: torch.Tensor
    mse: torch.Tensor  # next-latent MSE (per latent entry)
    reward: torch.Tensor  # reward MSE
    cont: torch.Tensor  # continuation BCE
    sparsity: torch.Tensor  # paths per transition (object rows of the path matrix)
    recon: torch.Tensor  # pixels: reconstruction term per object image (recon_loss)
    kl: torch.Tensor  # pixels: KL per object
    mse_objects: torch.Tensor  # (N,) next-latent MSE of each object (no gradient)
    gate_excess: torch.Tensor  # gates' raw-logit excess over the soft clip (HardGate.logits)


def _price(sparsity_weight: float | Sequence[float], n: int, like: torch.Tensor) -> torch.Tensor:
    """The Lagrangian's lambda as a tensor: a scalar, or one value per child object."""
    weight = torch.as_tensor(sparsity_weight, dtype=like.dtype, device=like.device)
    if weight.ndim and weight.shape != (n,):
        raise ValueError(
            f"sparsity_weight must be a scalar or {n} values (one per object), got "
            f"shape {tuple(weight.shape)}"
        )
    return weight


class WorldModel(nn.Module):
    """A causal (or dense) world model over object tokens.

    Args:
        config: Architecture and loss weights (``config.name`` picks the model).
        regime_ids: Env regime ids of the codebook entries, in order.
        action_dim: Number of discrete actions, or the size of a continuous action.
        discrete_actions: Discrete (embedding) or continuous (linear) action token.

    >>> m = WorldModel(WorldModelConfig(d_model=16, n_heads=2, mlp_hidden=16), (0, 1))
    >>> out = m(torch.zeros(2, 3, 4, 4), torch.zeros(2, 3, dtype=torch.long),
    ...         torch.tensor([0, 1]))
    >>> out.next_latent.shape, out.graph.shape
    (torch.Size([2, 3, 4, 4]), torch.Size([2, 3, 6, 4]))
    """

    def __init__(
        self,
        config: WorldModelConfig,
        regime_ids: tuple[int, ...] | list[int],
        action_dim: int = 3,
        discrete_actions: bool = True,
    ) -> None:
        super().__init__()
        if not regime_ids:
            raise ValueError("regime_ids must name at least one training regime")
        self.config = config
        self.regime_ids = tuple(int(r) for r in regime_ids)
        self.action_dim, self.discrete_actions = int(action_dim), bool(discrete_actions)
        c, d = config, config.d_model
        self.encoder: ObjectFeatureEncoder | MaskedImageVAE = (
            ObjectFeatureEncoder()
            if c.obs == "objects"
            else MaskedImageVAE(c.latent_dim, c.image_size, recon_loss=c.recon_loss)
        )
        self.latent_dim = self.encoder.latent_dim
        # per-object tokeniser: a small MLP, so that the first layer's gate already sees
        # non-linear features of each object (a bilinear q.k of raw features cannot
        # express proximity, which decides the collision edges)
        self.in_proj = nn.Sequential(
            nn.Linear(self.latent_dim, c.mlp_hidden), nn.SiLU(), nn.Linear(c.mlp_hidden, d)
        )
        self.object_embedding = nn.Embedding(MAX_OBJECTS, d)
        self.action_embedding: nn.Module = (
            nn.Embedding(action_dim, d) if discrete_actions else nn.Linear(action_dim, d)
        )
        self.codebook = nn.Embedding(len(self.regime_ids), d)
        self.type_embedding = nn.Embedding(2, d)  # action, regime
        if c.family == "transformer":
            self.core: SpartanCore | S2SSMCore = SpartanCore(
                d,
                c.n_layers,
                c.n_heads,
                c.mlp_hidden,
                c.sparse,
                c.gate_bias_init,
                c.gate_temperature,
                c.gate_action_key,
                c.gate_detach,
                c.gate_score_cap,
                c.gate_explore,
            )
        else:
            self.core = S2SSMCore(
                d,
                c.n_layers,
                c.n_heads,
                c.mlp_hidden,
                c.d_state,
                c.expand,
                c.d_conv,
                c.ssm_backend,
                c.sparse,
                c.gate_bias_init,
                c.gate_temperature,
                c.gate_action_key,
                c.gate_detach,
                c.gate_score_cap,
                c.gate_explore,
            )
        for g in self.core.modules():
            if isinstance(g, HardGate):
                g.estimator = c.gate_estimator
        self.out_norm = nn.LayerNorm(d)
        self.out_proj = nn.Linear(d, self.latent_dim)
        self.reward_head = MLP(d, c.mlp_hidden, 1)
        self.cont_head = MLP(d, c.mlp_hidden, 1)
        lookup = torch.full((64,), -1, dtype=torch.long)
        lookup[list(self.regime_ids)] = torch.arange(len(self.regime_ids))
        self._regime_lookup: torch.Tensor
        self.register_buffer("_regime_lookup", lookup, persistent=False)
        # Dense baselines: attention threshold of the graph (chosen on validation data).
        self.graph_threshold: torch.Tensor
        self.register_buffer("graph_threshold", torch.tensor(0.1))
        self.extra: dict[str, Any] = {}  # what save(extra=...) stored (fit's figures)

    # ------------------------------------------------------------------ tokens
    def regime_token(self, regimes: torch.Tensor) -> torch.Tensor:
        """Codebook tokens (B, d) of env regime ids (B,); unknown ids raise ValueError."""
        idx = self._regime_lookup[regimes.long().clamp(0, 63)]
        if (idx < 0).any() or (regimes < 0).any() or (regimes > 63).any():
            bad = sorted(set(regimes[(idx < 0) | (regimes < 0) | (regimes > 63)].tolist()))
            raise ValueError(
                f"regime id(s) {bad} have no codebook entry; this model knows "
                f"{list(self.regime_ids)} (fit a free token for others: adaptation)"
            )
        return self.codebook(idx)

    def _regime(self, regime: torch.Tensor) -> torch.Tensor:
        return self.regime_token(regime) if not regime.is_floating_point() else regime

    def tokens(
        self, latents: torch.Tensor, actions: torch.Tensor, regime: torch.Tensor
    ) -> torch.Tensor:
        """Tokens (B, T, N + 2, d) from latents (B, T, N, L), actions and a regime.

        ``regime`` is either env ids (B,) (codebook) or tokens (B, d) (float).
        """
        b, t, n, _ = latents.shape
        if n > MAX_OBJECTS:
            raise ValueError(f"at most {MAX_OBJECTS} objects, got {n}")
        obj = self.in_proj(latents) + self.object_embedding.weight[:n]
        if self.discrete_actions:
            act = self.action_embedding(actions.long())
        else:
            act = self.action_embedding(actions.float().reshape(b, t, self.action_dim))
        act = act + self.type_embedding.weight[0]
        reg = (self._regime(regime) + self.type_embedding.weight[1])[:, None].expand(b, t, -1)
        return torch.cat([obj, act.unsqueeze(2), reg.unsqueeze(2)], 2)

    # ------------------------------------------------------------------ predictions
    def _outputs(self, latents: torch.Tensor, core: CoreOutput) -> WorldModelOutput:
        n = latents.shape[2]
        h = self.out_norm(core.h)
        objects = h[:, :, :n]
        next_latent = latents + self.out_proj(objects)
        pooled = objects.mean(2)
        if self.config.sparse:
            adj = core.adjacency
        else:  # dense: soft attention thresholded (CoDA-style baseline)
            adj = [fix_structure((w > self.graph_threshold).float(), n) for w in core.attention]
        paths = path_matrix(adj)
        return WorldModelOutput(
            next_latent,
            self.reward_head(pooled).squeeze(-1),
            self.cont_head(pooled).squeeze(-1),
            graph_from_paths(paths.detach(), n),
            paths,
            core.attention,
        )

    def forward(
        self,
        latents: torch.Tensor,
        actions: torch.Tensor,
        regime: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> WorldModelOutput:
        """Sequence mode: latents (B, T, N, L) of o_0..o_{T-1}, actions (B, T), regime."""
        x = self.tokens(latents, actions, regime)
        return self._outputs(latents, self.core(x, latents.shape[2], generator))

    def initial_state(self, batch: int, n_objects: int) -> Any:
        """Recurrent state for :meth:`step` (None for SPARTAN, Mamba states for S2-SSM)."""
        device = self.codebook.weight.device
        return self.core.initial_state(batch, n_objects + 2, device)

    def step(
        self,
        latent: torch.Tensor,
        action: torch.Tensor,
        regime: torch.Tensor,
        state: Any = None,
    ) -> tuple[WorldModelOutput, Any]:
        """One-step mode for imagination: latent (B, N, L), action (B,) or (B, A).

        Returns the outputs with T = 1 and the new recurrent state (pass ``state=None``
        at the start of a rollout).
        """
        x = self.tokens(latent.unsqueeze(1), action.unsqueeze(1), regime)[:, 0]
        core, new_state = self.core.step(x, latent.shape[1], state)  # type: ignore[arg-type]
        return self._outputs(latent.unsqueeze(1), core), new_state

    def encode(self, obs: Any) -> torch.Tensor:
        """Object latents (B, T, N, L) of observations (see :class:`SequenceBatch`)."""
        return self.encoder.encode(obs)

    # ------------------------------------------------------------------ objective
    def loss(
        self,
        batch: SequenceBatch,
        sparsity_weight: float | Sequence[float],
        generator: torch.Generator | None = None,
        regime: torch.Tensor | None = None,
    ) -> tuple[LossTerms, WorldModelOutput]:
        """The objective on a batch; ``sparsity_weight`` is the Lagrangian's lambda: one
        price for every path, or one per child object (the price of the paths into it).

        The prediction target is the encoder's latent of the next observation with the
        gradient stopped (the encoder is anchored by its own reconstruction term in pixels
        mode; in objects mode the latent is the features and nothing changes).
        """
        c = self.config
        z, enc = self.encoder.loss(batch.obs)
        if (
            c.sparse
            and c.gate_estimator != "straight_through"
            and self.training
            and torch.is_grad_enabled()
        ):
            return self._score_function_loss(batch, z, enc, sparsity_weight, generator, regime)
        out = self(z[:, :-1], batch.actions, batch.regimes if regime is None else regime, generator)
        target = z[:, 1:].detach()
        mse = F.mse_loss(out.next_latent, target)
        with torch.no_grad():
            mse_objects = (out.next_latent - target).square().mean((0, 1, 3))
        reward = F.mse_loss(out.reward, batch.rewards.float())
        cont = F.binary_cross_entropy_with_logits(out.cont_logit, batch.conts.float())
        n = z.shape[2]
        into = out.paths[:, :, :n].sum(-1).mean((0, 1)) if c.sparse else z.new_zeros(n)
        sparsity = into.sum()  # paths per transition; into[i]: paths into object i
        total = c.token_weight * mse + c.reward_weight * reward + c.cont_weight * cont
        weight = _price(sparsity_weight, n, into)
        if c.sparse and bool((weight != 0).any()):  # exactly zero weight adds nothing
            total = total + (weight * into).sum()
        terms = self._terms(total, mse, reward, cont, sparsity, enc, mse_objects, self._excess())
        return terms, out

    def _excess(self) -> torch.Tensor:
        """The gates' raw-logit excess of the last pass, summed over layers."""
        total = self.codebook.weight.new_zeros(())
        for g in self.modules():
            if isinstance(g, HardGate) and g.excess is not None:
                total = total + g.excess
        return total

    def _terms(
        self,
        total: torch.Tensor,
        mse: torch.Tensor,
        reward: torch.Tensor,
        cont: torch.Tensor,
        sparsity: torch.Tensor,
        enc: Any,
        mse_objects: torch.Tensor,
        gate_excess: torch.Tensor,
    ) -> LossTerms:
        """The loss terms, with the logit penalty and (pixels mode) the encoder's terms
        added to ``total``."""
        c = self.config
        if c.gate_logit_weight > 0:
            total = total + c.gate_logit_weight * gate_excess
        if c.obs == "pixels":
            total = total + c.recon_weight * enc.recon + c.kl_weight * enc.kl
        return LossTerms(
            total, mse, reward, cont, sparsity, enc.recon, enc.kl, mse_objects, gate_excess
        )

    def _score_function_loss(
        self,
        batch: SequenceBatch,
        z: torch.Tensor,
        enc: Any,
        sparsity_weight: float | Sequence[float],
        generator: torch.Generator | None,
        regime: torch.Tensor | None,
    ) -> tuple[LossTerms, WorldModelOutput]:
        """:meth:`loss` with ``gate_estimator='score'`` (see WorldModelConfig).

        Two passes with independent gate samples. The network trains on both sampled hard
        graphs (pathwise gradient, no gradient through the gates); the gates train on the
        score-function term ``0.5 (R1 - R2) (log p1 - log p2)``, each sample's reward the
        other's baseline, so its gradient is an unbiased estimate of the gradient of the
        expected objective. The reward of a gate is every part of the objective that its
        sample can change:

        - a gate of the last layer in row i: object i's share of the MSE term
          (``token_weight x`` its squared error per latent entry / N), its price
          (``lambda_i x`` the paths into it) and the transition's reward and continuation
          terms (their heads read the pooled object tokens);
        - a gate of an earlier layer: the whole objective of the transition (the later
          layers' gates of every row read the token it changed). In S2-SSM, whose Mamba
          layers carry a step into the later ones, the sum over this and the later steps
          of the sequence.

        With ``score_reach`` instead, a gate of token i in layer l is credited with the
        prediction and price terms of the children that i reaches through the later
        layers' sampled gates (less variance; biased, since the later gates' logits read
        token i whether or not they open).

        The returned ``total`` has the objective's value (the two passes averaged, the
        price included) and, through the score term, the gates' gradient; the output is
        the first pass's.
        """
        c = self.config
        gates = [g for g in self.core.modules() if isinstance(g, HardGate)]
        latents, target = z[:, :-1], z[:, 1:].detach()
        reg = batch.regimes if regime is None else regime
        n = z.shape[2]
        price = _price(sparsity_weight, n, z).expand(n)
        rewards_true, conts = batch.rewards.to(z.dtype), batch.conts.to(z.dtype)
        passes = []
        for _ in range(2):
            x = self.tokens(latents, batch.actions, reg)
            core = self.core(x, n, generator)
            out = self._outputs(latents, core)
            log_prob: list[torch.Tensor] = []
            for g in gates:
                if g.log_prob is None:
                    raise RuntimeError("a gate returned no log-probability in score mode")
                log_prob.append(g.log_prob)
            err = (out.next_latent - target).square()
            reward = (out.reward - rewards_true).square()  # (B, T)
            cont = F.binary_cross_entropy_with_logits(out.cont_logit, conts, reduction="none")
            into = out.paths[:, :, :n].sum(-1).detach()  # (B, T, N): paths into each object
            with torch.no_grad():
                objects = c.token_weight * err.mean(-1) / n + price * into  # (B, T, N)
                heads = c.reward_weight * reward + c.cont_weight * cont  # (B, T)
                last = (
                    torch.cat(  # (B, T, M): the action and regime rows are not sampled
                        [objects, objects.new_zeros(*objects.shape[:2], 2)], -1
                    )
                    + heads.unsqueeze(-1)
                )
                whole = objects.sum(-1) + heads
                if c.family == "ssm":  # this step and the later ones of the sequence
                    whole = whole.flip(1).cumsum(1).flip(1)
            if c.gate_estimator == "score_reach":
                credit = self._reach_credit(core.adjacency, objects)
            else:
                credit = [whole.unsqueeze(-1)] * (len(gates) - 1) + [last]
            passes.append((out, err, reward, cont, into, log_prob, credit, self._excess()))
        (o1, e1, rw1, c1, in1, lp1, r1, x1), (_o2, e2, rw2, c2, in2, lp2, r2, x2) = passes
        m = n + 2
        free = torch.zeros(m, m, dtype=z.dtype, device=z.device)
        free[:n] = 1.0  # the sampled entries: object rows, off the diagonal
        free = free * (1.0 - torch.eye(m, dtype=z.dtype, device=z.device))
        score = z.new_zeros(())
        for a1, a2, b1, b2 in zip(lp1, lp2, r1, r2, strict=True):
            advantage = 0.5 * (b1 - b2).unsqueeze(-1)  # (B, T, M or 1, 1), no gradient
            score = score + (advantage * (a1 - a2) * free).sum((-1, -2)).mean()
        mse = 0.5 * (e1.mean() + e2.mean())
        with torch.no_grad():
            mse_objects = 0.5 * (e1.mean((0, 1, 3)) + e2.mean((0, 1, 3)))
        reward = 0.5 * (rw1.mean() + rw2.mean())
        cont = 0.5 * (c1.mean() + c2.mean())
        into_mean = 0.5 * (in1.mean((0, 1)) + in2.mean((0, 1)))  # (N,)
        sparsity = into_mean.sum()
        gate_excess = 0.5 * (x1 + x2)
        total = c.token_weight * mse + c.reward_weight * reward + c.cont_weight * cont
        total = total + (price * into_mean).sum() + (score - score.detach())
        return self._terms(total, mse, reward, cont, sparsity, enc, mse_objects, gate_excess), o1

    @staticmethod
    def _reach_credit(adjacency: list[torch.Tensor], objects: torch.Tensor) -> list[torch.Tensor]:
        """Per layer, the credit (B, T, M) of each row's gates under ``score_reach``: the
        sum of ``objects`` (B, T, N) over the children that the row's token reaches
        through the later layers (sampled adjacencies)."""
        n = objects.shape[-1]
        reach = torch.eye(adjacency[0].shape[-1], dtype=objects.dtype, device=objects.device)
        reach = reach.expand_as(adjacency[0])
        credit = []
        for a in reversed(adjacency):  # reach: the product of the layers after this one
            reached = (reach[..., :n, :] >= 0.5).to(objects.dtype)  # (B, T, N, M)
            credit.append((reached * objects.unsqueeze(-1)).sum(-2))
            reach = reach @ a.detach()
        return credit[::-1]

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
        """Write the model (config, codebook ids, weights, ``extra``) atomically."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "config": self.config.to_dict(),
            "regime_ids": list(self.regime_ids),
            "action_dim": self.action_dim,
            "discrete_actions": self.discrete_actions,
            "state_dict": self.state_dict(),
            "extra": extra or {},
        }
        write_atomic(p, lambda t: torch.save(payload, t), ".pt")
        return p

    @classmethod
    def load(cls, path: str | Path, map_location: str | torch.device = "cpu") -> WorldModel:
        """Load a file written by :meth:`save`; other files raise ValueError."""
        p = Path(path)
        if not p.is_file():
            raise ValueError(f"world model file {str(p)!r} does not exist")
        try:
            payload = torch.load(p, map_location=map_location, weights_only=True)
        except Exception as e:
            raise ValueError(f"{str(p)!r} is not a readable world model file ({e})") from None
        if not isinstance(payload, dict) or payload.get("format") != FORMAT:
            raise ValueError(f"{str(p)!r} is not an mbrl-causal world model file")
        if payload.get("version") != FORMAT_VERSION:
            raise ValueError(
                f"{str(p)!r} has format version {payload.get('version')}; "
                f"this mbrl-causal reads version {FORMAT_VERSION}"
            )
        model = cls(
            stored_world_model_config(payload["config"]),
            payload["regime_ids"],
            payload["action_dim"],
            payload["discrete_actions"],
        )
        model.load_state_dict(payload["state_dict"])
        model.extra = payload.get("extra", {})
        model.eval()
        return model
