"""Small building blocks shared by families and the filter ensemble."""
from __future__ import annotations

import torch
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def conv_block(c_in: int, c_out: int, dropout: float) -> nn.Sequential:
    """conv3x3 -> BN -> ReLU -> maxpool(2) -> dropout: halves H and W."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Dropout2d(dropout) if dropout > 0 else nn.Identity(),
    )


class BNConvNet(nn.Module):
    """The borges pots classifier, in PyTorch: conv blocks, global pooling, a dense head.

    widths=(32, 64, 128, 256) gives 4 blocks; input (B, 3, H, W) float, normalised.
    """

    def __init__(self, num_classes: int, widths=(32, 64, 128, 256), hidden=(256, 128),
                 dropout: float = 0.2, head_dropout: float = 0.3):
        super().__init__()
        blocks, c_in = [], 3
        for width in widths:
            blocks.append(conv_block(c_in, width, dropout))
            c_in = width
        self.features = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        layers = []
        for size in hidden:
            layers += [nn.Linear(c_in, size), nn.ReLU(inplace=True), nn.Dropout(head_dropout)]
            c_in = size
        layers.append(nn.Linear(c_in, num_classes))
        self.head = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.features(x)).flatten(1)   # (B, C)
        return self.head(x)                           # (B, num_classes) logits


def to_float(images: torch.Tensor, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)) -> torch.Tensor:
    """uint8 (B,3,H,W) -> normalised float32 (B,3,H,W)."""
    x = images.float().div_(255.0)
    mean_t = torch.tensor(mean, device=x.device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, device=x.device).view(1, 3, 1, 1)
    return (x - mean_t) / std_t
