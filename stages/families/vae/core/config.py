"""params.yaml ``train.vae`` and ``evaluate.vae``."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from stages.common.schema import bounds
from stages.families._shared.convnets import validate_coarse, validate_size


@dataclass
class VAETrain:
    # Every default is the value params.yaml ships. A checkpoint saved before coarse_size existed
    # lacks it and was trained without the colour field: read a stored config over these, never
    # over the defaults ({**CHECKPOINT_LEGACY, **ckpt["config"]}), so it loads as trained.
    CHECKPOINT_LEGACY: ClassVar[dict[str, Any]] = {"coarse_size": 0, "crop": "none"}

    image_size: int = field(default=64, metadata=bounds(ge=16, le=256))
    crop: Literal["none", "box", "saliency"] = "none"   # box | saliency: train on object-centred crops (_shared/crop.py)
    crop_margin: float = field(default=1.0, metadata=bounds(ge=1, le=4))   # crop side / the box's longer side
    latent_dim: int = field(default=10, metadata=bounds(ge=2))
    widths: list[int] = field(default_factory=lambda: [16, 32, 64, 128])    # one halving each
    coarse_size: int = field(default=8, metadata=bounds(ge=0))              # z -> 3 x k x k colour field; 0: off
    beta: float = field(default=1.0, metadata=bounds(ge=0))
    kl_warmup_epochs: int = field(default=3, metadata=bounds(ge=0))         # 0: full β from the start
    recon_loss: Literal["mse", "l1"] = "mse"
    perceptual_weight: float = field(default=0.05, metadata=bounds(ge=0))   # γ; 0: no perceptual loss
    perceptual_net: Literal["auto", "vgg16", "mobilenet_v2"] = "auto"       # auto: vgg16 if cached
    perceptual_layer: int = field(default=0, metadata=bounds(ge=0))         # modules of .features; 0: default
    epochs: int = field(default=30, metadata=bounds(ge=1))
    batch_size: int = field(default=32, metadata=bounds(ge=2))
    lr: float = field(default=1e-3, metadata=bounds(gt=0))
    lr_decay: float = field(default=0.95, metadata=bounds(gt=0, le=1))      # per epoch (castle: 0.96 / 2.5k steps)

    def validate(self, path: str) -> None:
        validate_size(self, path)
        validate_coarse(self, path)


@dataclass
class VAEEvaluate:
    fid_network: str = "mobilenet_v2"
    feature_size: int = field(default=224, metadata=bounds(ge=32, le=512))
    kid_subsets: int = field(default=20, metadata=bounds(ge=1))
    mig_bins: int = field(default=10, metadata=bounds(ge=2))   # equal-width bins per latent/factor
    dci: bool = True
    traverse_range: float = field(default=2.5, metadata=bounds(gt=0))   # ± standard deviations
    traverse_steps: int = field(default=9, metadata=bounds(ge=3, le=25))
    grid: int = field(default=16, metadata=bounds(ge=1, le=64))         # images per picture row/grid


TrainConfig = VAETrain
EvaluateConfig = VAEEvaluate
