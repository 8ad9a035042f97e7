"""vae: a β-VAE with a perceptual loss (the castle dreamer's recipe, sized for a CPU).

loss per image = recon(x, x̂) + β_t · KL(q(z|x) || N(0, I)) + γ · |φ(x) − φ(x̂)|₁
where φ is a frozen pretrained network cut at ``perceptual_layer`` and β_t ramps linearly
from 0 to β over ``kl_warmup_epochs``. All terms are sums over an image's elements, averaged
over the batch, so β keeps its meaning from the β-VAE paper (β = 1: the plain ELBO).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from stages.families._shared import gen as genbase
from stages.families._shared.convnets import CoarseColour, check_size, decoder, encoder
from stages.families.vae.core.config import VAETrain


class BetaVAE(nn.Module):
    def __init__(self, cfg: VAETrain):
        super().__init__()
        side = check_size(cfg.image_size, len(cfg.widths))
        self.shape = (cfg.widths[-1], side, side)                 # bottleneck map, e.g. (256, 4, 4)
        flat = cfg.widths[-1] * side * side
        self.encode_map = encoder(cfg.widths)
        self.to_stats = nn.Linear(flat, 2 * cfg.latent_dim)      # -> (mu, logvar)
        self.from_latent = nn.Linear(cfg.latent_dim, flat)
        self.decode_map = decoder(list(reversed(cfg.widths)), cfg.widths[-1])
        self.coarse = CoarseColour(cfg.latent_dim, cfg.image_size, cfg.coarse_size) if cfg.coarse_size else None

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, S, S) -> mu, logvar, each (B, L)."""
        mu, logvar = self.to_stats(self.encode_map(x).flatten(1)).chunk(2, dim=1)
        return mu, logvar.clamp(-12, 8)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(B, L) -> (B, 3, S, S) in [-1, 1].

        The conv stack draws the shapes; with ``coarse_size`` z also paints a k x k colour
        field (CoarseColour), added before the tanh: without it reconstructions stay grey.
        """
        h = F.relu(self.from_latent(z)).view(len(z), *self.shape)
        body = self.decode_map[:-1](h)                              # pre-tanh (B, 3, S, S)
        if self.coarse is not None:
            body = body + self.coarse(z)
        return torch.tanh(body)

    def forward(self, x: torch.Tensor):
        mu, logvar = self.encode(x)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()    # reparameterisation
        return self.decode(z), mu, logvar


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, e^logvar) || N(0, I)) per image, summed over latents: (B,)."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1)


def recon_error(x_hat: torch.Tensor, x: torch.Tensor, kind: str) -> torch.Tensor:
    """Per-image reconstruction error summed over pixels: (B,)."""
    diff = (x_hat - x).pow(2) if kind == "mse" else (x_hat - x).abs()
    return diff.flatten(1).sum(1)


def vae_losses(model: BetaVAE, x: torch.Tensor, cfg: VAETrain, beta: float, perceptual) -> dict[str, torch.Tensor]:
    x_hat, mu, logvar = model(x)
    terms = {"recon": recon_error(x_hat, x, cfg.recon_loss).mean(), "kl": kl_divergence(mu, logvar).mean()}
    loss = terms["recon"] + beta * terms["kl"]
    if perceptual is not None:
        terms["perceptual"] = (perceptual(x_hat) - perceptual(x)).abs().flatten(1).sum(1).mean()
        loss = loss + cfg.perceptual_weight * terms["perceptual"]
    return {"loss": loss, **terms}


def load_vae(path, device) -> tuple[BetaVAE, dict]:
    return genbase.load_model(path, BetaVAE, VAETrain, device)
