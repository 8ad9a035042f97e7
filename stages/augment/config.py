"""params.yaml ``augment``: offline growth and the online ops' settings."""
from __future__ import annotations

from dataclasses import dataclass, field

from stages.common.schema import bounds
from stages.shared.augment_ops import AugmentOps


@dataclass
class Augment:
    per_class: int = field(default=0, metadata=bounds(ge=0))  # 0: no offline augmentation
    offline: AugmentOps = field(default_factory=AugmentOps)
    online: AugmentOps = field(default_factory=AugmentOps)
    preview: int = field(default=8, metadata=bounds(ge=1, le=64))  # originals in the preview grid
