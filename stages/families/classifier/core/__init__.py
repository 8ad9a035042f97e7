"""classifier family: a BN CNN trained from scratch (the borges pots classifier), or a
torchvision backbone fine-tuned in phases (``arch: <torchvision name>``, see
core/backbones.py and core/finetune.py). This package builds and loads the model and
holds what train/ and evaluate/ share (data sources, the fitting pieces).

train: bnconv on the 64-px shards; a backbone on the image store at its own input size:
a probe (the head fit on cached trunk features), then fine-tuning with a lower trunk LR
and frozen batch-norm statistics. Adam/AdamW/SGD, cosine/step LR schedule, early
stopping, best-checkpoint keeping, per-epoch resume. evaluate: accuracy, per-class
precision/recall/F1, a confusion matrix (DVC plot + PNG) and a grid of misclassified
test images with their top-3 predictions.
"""
from __future__ import annotations

import torch
from torch import nn

from stages.common.schema import from_dict
from stages.families.classifier.core.backbones import (
    TransferNet,
    build_transfer_net,
)
from stages.families.classifier.core.config import ClassifierConfig
from stages.shared.checkpoint import (
    load_checkpoint,
)
from stages.shared.nets import BNConvNet, to_float


def build_model(cfg: ClassifierConfig, num_classes: int) -> nn.Module:
    """The architecture with random weights (a checkpoint's state dict is loaded over it)."""
    if cfg.arch != "bnconv":
        return TransferNet(cfg.arch, num_classes, cfg.head, cfg.input_size)
    return BNConvNet(num_classes, widths=tuple(cfg.widths), hidden=tuple(cfg.hidden),
                     dropout=cfg.dropout, head_dropout=cfg.head_dropout)


def initial_model(cfg: ClassifierConfig, classes: list[str]) -> tuple[nn.Module, str]:
    """The model training starts from, and a note on where its weights came from."""
    if cfg.arch == "bnconv":
        return build_model(cfg, len(classes)), "bnconv from scratch"
    return build_transfer_net(cfg.arch, classes, cfg.head, cfg.weights, cfg.input_size)


def make_preprocess(device: torch.device, cfg: ClassifierConfig | None = None):
    """uint8 (B,3,H,W) on device -> model input. A backbone resizes and normalises itself."""
    if cfg is not None and cfg.arch != "bnconv":
        return lambda images: images
    def preprocess(images: torch.Tensor) -> torch.Tensor:
        return to_float(images).contiguous(memory_format=torch.channels_last)
    return preprocess


def model_from_checkpoint(checkpoint: dict, device: torch.device | str = "cpu"):
    """(model in eval mode, class names in training order, preprocess) from a checkpoint dict."""
    cfg = from_dict(ClassifierConfig, checkpoint["config"], "checkpoint.config")
    model = build_model(cfg, len(checkpoint["classes"]))
    model.load_state_dict(checkpoint["model"])
    model.to(device, memory_format=torch.channels_last).eval()
    return model, list(checkpoint["classes"]), make_preprocess(torch.device(device), cfg)


def load_classifier(path, device: torch.device | str = "cpu"):
    """(model in eval mode, class names in training order, preprocess) from a kiln checkpoint."""
    return model_from_checkpoint(load_checkpoint(path, device), device)
