"""params.yaml ``demo``: the embedded corpus (rendered by the crawl for ``crawl.engine: local``)."""
from __future__ import annotations

from dataclasses import dataclass, field

from stages.common.schema import ParamsError, bounds
from stages.demo.shapes import CLASSES


@dataclass
class Demo:
    n_per_class: int = field(default=1000, metadata=bounds(ge=1))
    image_size: int = field(default=64, metadata=bounds(ge=16, le=1024))
    distractors_per_class: int = field(default=100, metadata=bounds(ge=0))
    junk_per_class: int = field(default=60, metadata=bounds(ge=0))


def check_demo_classes(classes: list[str], user: str = "the demo corpus renders") -> None:
    """ParamsError on ``base.classes`` unless the demo renders every class; ``user`` opens
    the message (who needs the demo's classes)."""
    unknown = [name for name in classes if name not in CLASSES]
    if unknown:
        raise ParamsError("base.classes", f"{user} only {', '.join(CLASSES)} "
                                          f"(got {', '.join(map(repr, unknown))})")
