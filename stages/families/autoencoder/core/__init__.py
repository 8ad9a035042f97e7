"""autoencoder: a convolutional autoencoder (ML2a2 part 2, without its flaw).

The code is a small feature map (B, code_channels, S/2^k, S/2^k) reached by strided convs and
a 1x1 conv, never a full-resolution map flattened into a linear layer (what exhausted ML2a2's
GPU memory). Evaluate projects the flattened codes with PCA, colours them by class, and clusters
them with k-means (NMI/ARI against the classes).
"""
from __future__ import annotations

import torch
from torch import nn

from stages.families._shared import gen as genbase
from stages.families._shared.convnets import check_size, decoder, encoder
from stages.families.autoencoder.core.config import AETrain


class ConvAutoencoder(nn.Module):
    def __init__(self, cfg: AETrain):
        super().__init__()
        check_size(cfg.image_size, len(cfg.widths))
        self.encode = nn.Sequential(encoder(cfg.widths), nn.Conv2d(cfg.widths[-1], cfg.code_channels, 1))
        self.expand = nn.Sequential(nn.Conv2d(cfg.code_channels, cfg.widths[-1], 1), nn.ReLU(True))
        self.decode_map = decoder(list(reversed(cfg.widths)), cfg.widths[-1])

    def decode(self, code: torch.Tensor) -> torch.Tensor:
        """(B, code_channels, s, s) -> (B, 3, S, S) in [-1, 1]."""
        return self.decode_map(self.expand(code))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


def ae_losses(model: ConvAutoencoder, x: torch.Tensor, beta: float) -> dict[str, torch.Tensor]:
    """Per-image summed squared error, averaged over the batch (``beta`` is unused: no KL)."""
    recon = (model(x) - x).pow(2).flatten(1).sum(1).mean()
    return {"loss": recon}


def load_autoencoder(path, device) -> tuple[ConvAutoencoder, dict]:
    return genbase.load_model(path, ConvAutoencoder, AETrain, device)
