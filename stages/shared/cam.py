"""Class activation heatmaps (Grad-CAM, Selvaraju et al. 2017; CAM was planned in learnerWorkspace).

Works for any CNN: it hooks the last Conv2d, weights its feature maps by the
spatially pooled gradient of the chosen class score, and upsamples the result.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib import colormaps
from torch import nn


def last_conv(model: nn.Module) -> nn.Conv2d:
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError("Grad-CAM needs a model with at least one Conv2d")
    return convs[-1]


def grad_cam(model: nn.Module, x: torch.Tensor, classes: torch.Tensor | None = None) -> torch.Tensor:
    """Heatmaps (B, H, W) in [0, 1] for input x (B,3,H,W); ``classes`` defaults to the prediction."""
    saved = {}
    layer = last_conv(model)
    handle = layer.register_forward_hook(lambda _m, _i, out: saved.update(act=out))
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            logits = model(x)
            target = logits.argmax(1) if classes is None else classes
            act = saved["act"]                                             # (B, C, h, w)
            score = logits.gather(1, target.view(-1, 1)).sum()
            (grads,) = torch.autograd.grad(score, act)
    finally:
        handle.remove()
        model.train(was_training)
    weights = grads.mean(dim=(2, 3), keepdim=True)                         # (B, C, 1, 1)
    cam = F.relu((weights * act).sum(1, keepdim=True))                     # (B, 1, h, w)
    cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    peak = cam.flatten(1).amax(1).clamp_min(1e-8).view(-1, 1, 1)
    return (cam / peak).detach()


def overlay(images: torch.Tensor, heatmaps: torch.Tensor, alpha: float = 0.45) -> torch.Tensor:
    """uint8 (B,3,H,W) images blended with a 'jet' colouring of heatmaps (B,H,W) -> uint8."""
    colours = colormaps["jet"](heatmaps.cpu().numpy())[..., :3]              # (B, H, W, 3) in [0, 1]
    colours = torch.from_numpy(np.ascontiguousarray(colours)).permute(0, 3, 1, 2).float() * 255
    blended = (1 - alpha) * images.cpu().float() + alpha * colours
    return blended.round().clamp(0, 255).to(torch.uint8)
