"""vae: a β-VAE with a perceptual loss (the castle dreamer's recipe, sized for a CPU).

loss per image = recon(x, x̂) + β_t · KL(q(z|x) || N(0, I)) + γ · |φ(x) − φ(x̂)|₁
where φ is a frozen pretrained network cut at ``perceptual_layer`` and β_t ramps linearly
from 0 to β over ``kl_warmup_epochs``. All terms are sums over an image's elements, averaged
over the batch, so β keeps its meaning from the β-VAE paper (β = 1: the plain ELBO).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from stages import genbase
from stages.families import register_family
from stages.families.convnets import CoarseColour, check_size, decoder, encoder, validate_coarse, validate_size
from stages.schema import bounds


@dataclass
class VAETrain:
    image_size: int = field(default=64, metadata=bounds(ge=16, le=256))
    latent_dim: int = field(default=10, metadata=bounds(ge=2))
    widths: list[int] = field(default_factory=lambda: [16, 32, 64, 128])    # one halving each
    coarse_size: int = field(default=0, metadata=bounds(ge=0))              # z -> 3 x k x k colour field; 0: off
    beta: float = field(default=1.0, metadata=bounds(ge=0))
    kl_warmup_epochs: int = field(default=3, metadata=bounds(ge=0))         # 0: full β from the start
    recon_loss: Literal["mse", "l1"] = "mse"
    perceptual_weight: float = field(default=0.05, metadata=bounds(ge=0))   # γ; 0: no perceptual loss
    perceptual_net: Literal["auto", "vgg16", "mobilenet_v2"] = "auto"       # auto: vgg16 if cached
    perceptual_layer: int = field(default=0, metadata=bounds(ge=0))         # modules of .features; 0: default
    epochs: int = field(default=30, metadata=bounds(ge=1))
    batch_size: int = field(default=32, metadata=bounds(ge=2))
    lr: float = field(default=1e-3, metadata=bounds(gt=0))
    lr_decay: float = field(default=0.95, metadata=bounds(gt=0, le=1))      # per epoch (castle: 0.96 / 2.5k steps)

    def validate(self, path: str) -> None:
        validate_size(self, path)
        validate_coarse(self, path)


@dataclass
class VAEEvaluate:
    fid_network: str = "mobilenet_v2"
    feature_size: int = field(default=224, metadata=bounds(ge=32, le=512))
    kid_subsets: int = field(default=20, metadata=bounds(ge=1))
    mig_bins: int = field(default=10, metadata=bounds(ge=2))   # equal-width bins per latent/factor
    dci: bool = True
    traverse_range: float = field(default=2.5, metadata=bounds(gt=0))   # ± standard deviations
    traverse_steps: int = field(default=9, metadata=bounds(ge=3, le=25))
    grid: int = field(default=16, metadata=bounds(ge=1, le=64))         # images per picture row/grid


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


def train(ctx) -> None:
    """train@vae."""
    from stages.families.recon_train import fit
    from stages.featnets import PerceptualFeatures

    cfg = ctx.cfg
    perceptual = None
    if cfg.perceptual_weight > 0:
        perceptual = PerceptualFeatures(cfg.perceptual_net, cfg.perceptual_layer).to(ctx.device)
    model = BetaVAE(cfg)
    loss_fn = lambda m, x, beta: vae_losses(m, x, cfg, beta, perceptual)   # noqa: E731
    extra = lambda: {"perceptual": {"network": perceptual.network, "layer": perceptual.layer}   # noqa: E731
                     if perceptual is not None else None}
    fit(ctx, model, loss_fn, extra)


def evaluate(ctx) -> dict:
    """evaluate@vae (in vae_eval.py, imported when the stage runs)."""
    from stages.families.vae_eval import evaluate as run

    return run(ctx)


register_family("vae", train_config=VAETrain,
                evaluate_config=VAEEvaluate, train=train, evaluate=evaluate)
