"""autoencoder: a convolutional autoencoder (ML2a2 part 2, without its flaw).

The code is a small feature map (B, code_channels, S/2^k, S/2^k) reached by strided convs and
a 1x1 conv, never a full-resolution map flattened into a linear layer (what exhausted ML2a2's
GPU memory). Evaluate projects the flattened codes with PCA, colours them by class, and clusters
them with k-means (NMI/ARI against the classes).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from stages import genbase
from stages.families import register_family
from stages.families.convnets import check_size, validate_size, decoder, encoder
from stages.schema import bounds


@dataclass
class AETrain:
    image_size: int = field(default=64, metadata=bounds(ge=16, le=256))
    widths: list[int] = field(default_factory=lambda: [32, 64, 128, 128])   # one halving each
    code_channels: int = field(default=8, metadata=bounds(ge=1))            # bottleneck channels
    epochs: int = field(default=20, metadata=bounds(ge=1))
    batch_size: int = field(default=32, metadata=bounds(ge=2))
    lr: float = field(default=1e-3, metadata=bounds(gt=0))
    lr_decay: float = field(default=0.95, metadata=bounds(gt=0, le=1))

    def validate(self, path: str) -> None:
        validate_size(self, path)


@dataclass
class AEEvaluate:
    clusters: int = field(default=0, metadata=bounds(ge=0))    # k for k-means; 0: number of classes
    grid: int = field(default=16, metadata=bounds(ge=1, le=64))


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


def train(ctx) -> None:
    from stages.families.recon_train import fit

    model = ConvAutoencoder(ctx.cfg)
    code_side = check_size(ctx.cfg.image_size, len(ctx.cfg.widths))
    fit(ctx, model, ae_losses, lambda: {"code_shape": [ctx.cfg.code_channels, code_side, code_side]})


def evaluate(ctx) -> dict:
    """evaluate@autoencoder (in autoencoder_eval.py, imported when the stage runs)."""
    from stages.families.autoencoder_eval import evaluate as run

    return run(ctx)


register_family("autoencoder", train_config=AETrain,
                evaluate_config=AEEvaluate, train=train, evaluate=evaluate)
