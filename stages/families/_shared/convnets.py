"""Strided convolutional encoder/decoder stacks shared by the VAE and the autoencoder.

Each encoder stage halves H and W (conv 4x4 stride 2 -> BN -> LeakyReLU); each decoder stage
doubles them (transposed conv 4x4 stride 2 -> BN -> ReLU). The spatial bottleneck comes from
the strides, so no layer ever flattens a full-resolution feature map (ML2a2's memory flaw).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from stages.common.schema import ParamsError


def validate_size(cfg, path: str) -> None:
    """Config ``validate`` hook: image_size must halve cleanly through len(widths) stages."""

    try:
        check_size(cfg.image_size, len(cfg.widths))
    except ValueError as err:
        raise ParamsError(f"{path}.widths", str(err)) from err


def check_size(size: int, stages: int) -> int:
    """Side of the bottleneck map: size / 2**stages, which must be a whole number >= 1."""
    side = size >> stages
    if side < 1 or side << stages != size:
        raise ValueError(f"image size {size} is not divisible by 2**{stages} (one halving per width)")
    return side


def encoder(widths: list[int]) -> nn.Sequential:
    """(B, 3, S, S) -> (B, widths[-1], S / 2**len(widths), ...)."""
    layers, c_in = [], 3
    for width in widths:
        layers += [nn.Conv2d(c_in, width, 4, 2, 1, bias=False), nn.BatchNorm2d(width), nn.LeakyReLU(0.2, True)]
        c_in = width
    return nn.Sequential(*layers)


def decoder(widths: list[int], c_in: int) -> nn.Sequential:
    """(B, c_in, s, s) -> (B, 3, s * 2**len(widths), ...) in [-1, 1]; widths run from deep to shallow."""
    layers = []
    for width in widths[1:]:
        layers += [nn.ConvTranspose2d(c_in, width, 4, 2, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(True)]
        c_in = width
    layers += [nn.ConvTranspose2d(c_in, 3, 4, 2, 1), nn.Tanh()]
    return nn.Sequential(*layers)


class CoarseColour(nn.Module):
    """A linear map of a vector to a k x k colour field, upsampled to size x size: (B, D) -> (B, 3, S, S).

    The DCGAN generator and the VAE decoder add it to their conv stack's output before the
    tanh. The demo's grounds are smooth colour fields, which a transposed-conv stack learns
    late (it learns luminance layout first): the VAE's reconstructions stayed grey for all
    30 epochs without it (output chroma 0.012 after 6 epochs against the inputs' 0.076) and
    had their colours with it (0.071 after 6 epochs, at a lower MSE and the same KL).
    """

    def __init__(self, in_dim: int, size: int, k: int):
        super().__init__()
        self.size, self.k = size, k
        self.linear = nn.Linear(in_dim, 3 * k * k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        field = self.linear(x).view(len(x), 3, self.k, self.k)
        return F.interpolate(field, size=(self.size, self.size), mode="bilinear", align_corners=False)


def validate_coarse(cfg, path: str) -> None:
    """Config ``validate`` hook: the colour field cannot be finer than the image."""

    if cfg.coarse_size > cfg.image_size:
        raise ParamsError(f"{path}.coarse_size", f"must be at most image_size {cfg.image_size} (got {cfg.coarse_size})")
