"""params.yaml ``train.autoencoder`` and ``evaluate.autoencoder``."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from stages.common.schema import bounds
from stages.families._shared.convnets import validate_size


@dataclass
class AETrain:
    # A checkpoint saved before a key existed was trained without it: read a stored config
    # over these, never over the defaults ({**CHECKPOINT_LEGACY, **ckpt["config"]}).
    CHECKPOINT_LEGACY: ClassVar[dict[str, Any]] = {"crop": "none"}

    image_size: int = field(default=64, metadata=bounds(ge=16, le=256))
    crop: Literal["none", "box", "saliency"] = "box"   # train on object-centred crops (_shared/crop.py); none: whole images
    crop_margin: float = field(default=1.0, metadata=bounds(ge=1, le=4))   # crop side / the box's longer side
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
    cluster_components: int = field(default=5, metadata=bounds(ge=0))   # k-means in the top N whitened principal axes; 0: all dims
    grid: int = field(default=16, metadata=bounds(ge=1, le=64))


TrainConfig = AETrain
EvaluateConfig = AEEvaluate
