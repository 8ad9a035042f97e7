"""train@vae: the shared reconstruction loop on a β-VAE, with an optional perceptual loss."""
from __future__ import annotations

from stages.families._shared.recon_train import fit
from stages.families.vae.core import BetaVAE, vae_losses
from stages.shared.featnets import PerceptualFeatures


def train(ctx) -> None:
    """train@vae."""
    cfg = ctx.cfg
    perceptual = None
    if cfg.perceptual_weight > 0:
        perceptual = PerceptualFeatures(cfg.perceptual_net, cfg.perceptual_layer).to(ctx.device)
    model = BetaVAE(cfg)
    loss_fn = lambda m, x, beta: vae_losses(m, x, cfg, beta, perceptual)   # noqa: E731
    extra = lambda: {"perceptual": {"network": perceptual.network, "layer": perceptual.layer}   # noqa: E731
                     if perceptual is not None else None}
    fit(ctx, model, loss_fn, extra)
