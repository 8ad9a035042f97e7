"""params.yaml ``demo``: the embedded corpus."""
from __future__ import annotations

from dataclasses import dataclass, field

from stages.common.schema import bounds


@dataclass
class Demo:
    n_per_class: int = field(default=1000, metadata=bounds(ge=1))
    image_size: int = field(default=64, metadata=bounds(ge=16, le=1024))
    distractors_per_class: int = field(default=100, metadata=bounds(ge=0))
    junk_per_class: int = field(default=60, metadata=bounds(ge=0))
