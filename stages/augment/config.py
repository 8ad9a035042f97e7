"""params.yaml ``augment``: offline growth and the online ops' settings."""
from __future__ import annotations

from dataclasses import dataclass, field

from stages.common.schema import bounds
from stages.shared.augment_ops import (
    AugmentOps,
    Crop,
    Elastic,
    Erasing,
    OnlineOps,
    Rotation,
)


@dataclass(kw_only=True)
class OfflineOps(AugmentOps):
    """``augment.offline``: the ops that grow the training split; a block left out of
    params.yaml takes the shipped setting."""
    elastic: Elastic = field(default_factory=lambda: Elastic(p=0.3))
    crop: Crop = field(default_factory=lambda: Crop(p=0.5, scale=[0.75, 1.0]))
    erasing: Erasing = field(default_factory=lambda: Erasing(p=0.25))
    rotation: Rotation = field(default_factory=lambda: Rotation(p=0.5))


@dataclass
class Augment:
    per_class: int = field(default=0, metadata=bounds(ge=0))  # 0: no offline augmentation
    offline: OfflineOps = field(default_factory=OfflineOps)
    online: OnlineOps = field(default_factory=OnlineOps)
    preview: int = field(default=8, metadata=bounds(ge=1, le=64))  # originals in the preview grid
