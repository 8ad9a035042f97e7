"""train@autoencoder: the shared reconstruction loop on a ConvAutoencoder."""
from __future__ import annotations

from stages.families._shared.convnets import check_size
from stages.families._shared.recon_train import fit
from stages.families.autoencoder.core import ConvAutoencoder, ae_losses


def train(ctx) -> None:
    model = ConvAutoencoder(ctx.cfg)
    code_side = check_size(ctx.cfg.image_size, len(ctx.cfg.widths))
    fit(ctx, model, ae_losses, lambda: {"code_shape": [ctx.cfg.code_channels, code_side, code_side]})
