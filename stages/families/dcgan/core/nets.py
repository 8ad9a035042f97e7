"""DCGAN networks (Radford et al. 2016), conditioned on a vector c = [one-hot class, fields].

Generator: [z, c] (B, Z + C) -> 4x4 -> ... -> (B, 3, S, S) in [-1, 1] with strided transposed
convs, BN and ReLU, tanh at the end. Discriminator: strided convs with LeakyReLU(0.2) and BN
(none on the first layer) to 4x4, then a projection on c (Miyato & Koyama 2018) for the
real/fake logit and an auxiliary class head (AC-GAN, Odena et al. 2017). With
``spectral_norm`` every D layer is spectrally normalised (Miyato et al. 2018) instead of
batch-normalised: D stays 1-Lipschitz-ish, which keeps its gradients useful to G on a
tiny data set where a BN discriminator wins outright and G collapses.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm as _sn

from stages.families._shared.convnets import CoarseColour

SIZES = (32, 64, 128)


def up_steps(size: int) -> int:
    """Number of x2 stages from 4x4 to size x size (32 -> 3, 64 -> 4, 128 -> 5)."""
    if size not in SIZES:
        raise ValueError(f"DCGAN image size must be one of {SIZES} (got {size})")
    return int(math.log2(size // 4))


class Generator(nn.Module):
    """With ``coarse_size`` k, [z, c] also paints a k x k colour field (CoarseColour) that is
    added before the tanh: the smooth grounds come from it, the convs are left the pot."""

    def __init__(self, noise_dim: int, cond_dim: int, size: int, width: int, coarse_size: int = 0):
        super().__init__()
        steps = up_steps(size)
        channels = [width * 2 ** i for i in reversed(range(steps))]   # e.g. 256,128,64,32 for w=32, 64 px
        layers = [nn.ConvTranspose2d(noise_dim + cond_dim, channels[0], 4, 1, 0, bias=False),
                  nn.BatchNorm2d(channels[0]), nn.ReLU(True)]            # (B, ch0, 4, 4)
        for c_in, c_out in zip(channels, channels[1:]):
            layers += [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(True)]
        layers += [nn.ConvTranspose2d(channels[-1], 3, 4, 2, 1)]        # (B, 3, S, S), pre-tanh
        self.net = nn.Sequential(*layers)
        self.noise_dim, self.cond_dim = noise_dim, cond_dim
        self.coarse = CoarseColour(noise_dim + cond_dim, size, coarse_size) if coarse_size else None

    def forward(self, noise: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        x = torch.cat([noise, cond], dim=1)                      # (B, Z + C)
        out = self.net(x[:, :, None, None])
        if self.coarse is not None:
            out = out + self.coarse(x)
        return torch.tanh(out)


class Discriminator(nn.Module):
    def __init__(self, cond_dim: int, size: int, width: int, num_classes: int, spectral_norm: bool = False):
        super().__init__()
        steps = up_steps(size)
        channels = [width * 2 ** i for i in range(steps)]           # e.g. 32,64,128,256
        sn = _sn if spectral_norm else (lambda m: m)
        layers = [sn(nn.Conv2d(3, channels[0], 4, 2, 1)), nn.LeakyReLU(0.2, True)]
        for c_in, c_out in zip(channels, channels[1:]):
            if spectral_norm:
                layers += [sn(nn.Conv2d(c_in, c_out, 4, 2, 1)), nn.LeakyReLU(0.2, True)]
            else:
                layers += [nn.Conv2d(c_in, c_out, 4, 2, 1, bias=False), nn.BatchNorm2d(c_out), nn.LeakyReLU(0.2, True)]
        layers += [sn(nn.Conv2d(channels[-1], channels[-1], 4, 1, 0)), nn.LeakyReLU(0.2, True), nn.Flatten()]
        self.body = nn.Sequential(*layers)                            # (B, 3, S, S) -> (B, D)
        self.real_fake = sn(nn.Linear(channels[-1], 1))
        self.project = sn(nn.Linear(cond_dim, channels[-1], bias=False))  # c -> (B, D) for <W c, h>
        self.classify = sn(nn.Linear(channels[-1], num_classes))

    def forward(self, images: torch.Tensor, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(images)                                         # (B, D)
        logit = self.real_fake(h).squeeze(1) + (self.project(cond) * h).sum(1)   # (B,)
        return logit, self.classify(h)                                # (B,), (B, num_classes)


def init_weights(module: nn.Module) -> None:
    """DCGAN init: conv weights N(0, 0.02), BN weights N(1, 0.02)."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        # a spectrally normalised layer's .weight is computed; initialise the stored original
        weight = module.parametrizations.weight.original if parametrize.is_parametrized(module, "weight") else module.weight
        nn.init.normal_(weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)
