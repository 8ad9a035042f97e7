"""Frozen pretrained torchvision networks: perceptual-loss features and FID/KID embeddings.

``perceptual_net`` chooses VGG16 (what the castle dreamer used) when its weights are in the
torch cache, else MobileNetV2, whose weights ``stages.weights`` can install offline.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from stages.shared.nets import IMAGENET_MEAN, IMAGENET_STD
from stages.shared.weights import ensure_weights, weights_present

# how many modules of ``model.features`` to keep when the config says layer 0 (the default):
# vgg16[:9] ends at block2_conv2's ReLU (the castle dreamer's layer, 128 ch at 1/2 scale);
# mobilenet_v2[:2] ends at the first inverted residual (16 ch at 1/2 scale): as early as
# block2_conv2 and nearly free on a CPU ([:4], 24 ch at 1/4, costs ~60 % more per VAE step).
DEFAULT_LAYERS = {"vgg16": 9, "mobilenet_v2": 2}
POOLED_DIMS = {"mobilenet_v2": 1280, "inception_v3": 2048}


def resolve_network(name: str) -> str:
    """'auto' -> vgg16 when its weights are cached, else mobilenet_v2."""
    if name != "auto":
        return name
    return "vgg16" if weights_present("vgg16") else "mobilenet_v2"


def pretrained(network: str) -> nn.Module:
    """The ImageNet model in eval mode with frozen weights (loaded offline when cached)."""
    ensure_weights(network)
    builders = {
        "vgg16": lambda: torchvision.models.vgg16(weights="IMAGENET1K_V1"),
        "mobilenet_v2": lambda: torchvision.models.mobilenet_v2(weights="IMAGENET1K_V1"),
        "inception_v3": lambda: torchvision.models.inception_v3(weights="IMAGENET1K_V1", aux_logits=True),
    }
    model = builders[network]().eval()
    for param in model.parameters():
        param.requires_grad_(False)
    return model


def imagenet_normalise(images: torch.Tensor) -> torch.Tensor:
    """float images in [-1, 1] (B, 3, H, W) -> ImageNet-normalised (B, 3, H, W)."""
    mean = torch.tensor(IMAGENET_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=images.device).view(1, 3, 1, 1)
    return ((images + 1) / 2 - mean) / std


class PerceptualFeatures(nn.Module):
    """The first ``layer`` modules of a pretrained net's ``features``: (B,3,H,W) -> (B,C,h,w)."""

    def __init__(self, network: str = "auto", layer: int = 0):
        super().__init__()
        self.network = resolve_network(network)
        if self.network not in DEFAULT_LAYERS:
            raise ValueError(f"perceptual network must be one of {', '.join(DEFAULT_LAYERS)}")
        features = pretrained(self.network).features
        depth = layer or DEFAULT_LAYERS[self.network]
        if not 1 <= depth <= len(features):
            raise ValueError(f"perceptual layer must be 1..{len(features)} for {self.network} (got {layer})")
        self.body = features[:depth].eval()
        self.layer = depth

    def train(self, mode: bool = True):
        return super().train(False)   # frozen BN statistics, whatever the caller's mode

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(imagenet_normalise(images))


class PooledEmbedding(nn.Module):
    """Global-pooled penultimate features for FID/KID: uint8 (B,3,H,W) -> (B, D) float."""

    def __init__(self, network: str = "mobilenet_v2", size: int = 224):
        super().__init__()
        if network not in POOLED_DIMS:
            raise ValueError(f"FID network must be one of {', '.join(POOLED_DIMS)}")
        self.network, self.size = network, size
        model = pretrained(network)
        if network == "inception_v3":
            model.fc = nn.Identity()
            model.aux_logits, model.AuxLogits = False, None
            self.body = model
        else:
            self.body = nn.Sequential(model.features, nn.AdaptiveAvgPool2d(1), nn.Flatten())

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float() / 127.5 - 1
        x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return self.body(imagenet_normalise(x))


@torch.no_grad()
def embed(net: PooledEmbedding, images: torch.Tensor, device: torch.device, batch: int = 64) -> torch.Tensor:
    """Embed uint8 (N, 3, H, W) images in batches -> (N, D) float64 on the CPU."""
    net = net.to(device).eval()
    chunks = [net(images[i:i + batch].to(device)).double().cpu() for i in range(0, len(images), batch)]
    return torch.cat(chunks)
