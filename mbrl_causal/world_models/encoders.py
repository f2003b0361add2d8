"""Per-object encoders: the latent each object token is built from, and its decoder.

- :class:`ObjectFeatureEncoder` (objects mode): the latent of an object *is* its row of
  the env's objects observation (4 features, each about [-1, 1]); encoding and decoding
  are the identity, so next-token error and object-feature error coincide. The dynamics
  network's input projection (latent + learned object embedding -> d_model) turns it into
  a token.
- :class:`MaskedImageVAE` (pixels mode): each object's masked image
  ``pixels * mask_i`` goes through one shared small conv VAE (both papers' recipe); the
  latent is the posterior mean, KL-regularised, and a decoder reconstructs the masked
  image (binary cross-entropy by default). It is trained jointly with the dynamics
  (:meth:`loss`).

Both take a batch of observations (B, T, ...) and return latents (B, T, N, latent_dim).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from mbrl_causal.world_models.config import RECON_LOSSES

__all__ = ["EncoderLoss", "MaskedImageVAE", "ObjectFeatureEncoder", "masked_images"]


class EncoderLoss(NamedTuple):
    """Encoder terms of the objective (scalars): the reconstruction term summed over each
    masked image (3 x H x W values in [0, 1]; binary cross-entropy in nats, or the squared
    error with ``recon_loss="squared"``) and KL in nats, both per object (mean over
    objects and steps; zero in objects mode)."""

    recon: torch.Tensor
    kl: torch.Tensor


class ObjectFeatureEncoder(nn.Module):
    """Objects mode: latent = the object's 4 features (identity encoder and decoder)."""

    latent_dim = 4

    def encode(self, objects: torch.Tensor) -> torch.Tensor:
        return objects.float()

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        return latent

    def loss(self, objects: torch.Tensor) -> tuple[torch.Tensor, EncoderLoss]:
        z = self.encode(objects)
        zero = z.new_zeros(())
        return z, EncoderLoss(zero, zero)


def masked_images(pixels: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Per-object masked images (..., N, 3, H, W) in [0, 1] from uint8 pixels (..., H, W, 3)
    and bool masks (..., N, H, W)."""
    img = pixels.float().div(255.0).movedim(-1, -3)  # (..., 3, H, W)
    return img.unsqueeze(-4) * masks.unsqueeze(-3).float()


class MaskedImageVAE(nn.Module):
    """Shared conv VAE over each object's masked image (pixels + masks mode).

    Args:
        latent_dim: Latent size per object.
        image_size: 32, 64 or 84 (the env's render_size).
        width: Channels of the conv layers.
        recon_loss: ``bce`` (binary cross-entropy against the decoder's logits, the
            default) or ``squared`` (squared error of the sigmoid image), summed over the
            image. With the squared error the decoder stays near the blank image for a
            long time (a sparse image's pixels give it little gradient), and the latents
            carry almost nothing; cross-entropy gets past that within a few hundred steps.
    """

    def __init__(
        self, latent_dim: int = 16, image_size: int = 32, width: int = 32, recon_loss: str = "bce"
    ) -> None:
        super().__init__()
        if recon_loss not in RECON_LOSSES:
            raise ValueError(
                f"recon_loss must be one of {', '.join(RECON_LOSSES)}; got {recon_loss!r}"
            )
        self.recon_loss = recon_loss
        self.latent_dim = latent_dim
        self.image_size = image_size
        self.enc = nn.Sequential(
            nn.Conv2d(3, width, 4, 2, 1),
            nn.SiLU(),
            nn.Conv2d(width, 2 * width, 4, 2, 1),
            nn.SiLU(),
            nn.Conv2d(2 * width, 2 * width, 4, 2, 1),
            nn.SiLU(),
            nn.AdaptiveAvgPool2d(4),
            nn.Flatten(),
        )
        self.to_stats = nn.Linear(2 * width * 16, 2 * latent_dim)
        self.from_latent = nn.Linear(latent_dim, 2 * width * 16)
        self.dec = nn.Sequential(
            nn.Unflatten(1, (2 * width, 4, 4)),
            nn.ConvTranspose2d(2 * width, 2 * width, 4, 2, 1),
            nn.SiLU(),
            nn.ConvTranspose2d(2 * width, width, 4, 2, 1),
            nn.SiLU(),
            nn.ConvTranspose2d(width, 3, 4, 2, 1),
        )

    def _stats(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lead = images.shape[:-3]
        h = self.to_stats(self.enc(images.reshape(-1, *images.shape[-3:])))
        mean, logvar = h.view(*lead, 2 * self.latent_dim).chunk(2, -1)
        return mean, logvar.clamp(-10.0, 5.0)

    def encode(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Posterior means (B, T, N, latent_dim) of ``{"pixels", "masks"}``."""
        return self._stats(masked_images(obs["pixels"], obs["masks"]))[0]

    def decode_logits(self, latent: torch.Tensor) -> torch.Tensor:
        """The decoder's logits (..., N, 3, H, W); :meth:`decode` is their sigmoid."""
        lead = latent.shape[:-1]
        x = self.dec(self.from_latent(latent.reshape(-1, self.latent_dim)))
        if x.shape[-1] != self.image_size:
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear")
        return x.view(*lead, 3, self.image_size, self.image_size)

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """Reconstructed masked images (..., N, 3, H, W) (sigmoid, in [0, 1])."""
        return torch.sigmoid(self.decode_logits(latent))

    def loss(self, obs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, EncoderLoss]:
        """Posterior means (the tokens' latents) and the VAE terms on a batch."""
        images = masked_images(obs["pixels"], obs["masks"])
        mean, logvar = self._stats(images)
        z = mean + torch.randn_like(mean) * torch.exp(0.5 * logvar)
        # summed over the image (small objects would vanish in a mean)
        logits = self.decode_logits(z)
        if self.recon_loss == "bce":
            per_value = F.binary_cross_entropy_with_logits(logits, images, reduction="none")
        else:
            per_value = (torch.sigmoid(logits) - images).square()
        recon = per_value.sum((-3, -2, -1)).mean()
        kl = 0.5 * (mean.square() + logvar.exp() - 1.0 - logvar).sum(-1).mean()
        return mean, EncoderLoss(recon, kl)
