"""What a family's training sees besides ``base`` and its own section, for train@ and hpo@.

Both stages list the same params in dvc.yaml (``augment.online``, ``split.class_weights``),
so an hpo trial trains exactly as train@<family> would.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from stages.shared.augment_ops import OnlineOps

TRAIN_SECTIONS = {"augment.online": OnlineOps, "split.class_weights": Literal["none", "balanced"]}

# Per-epoch resume state and hpo trial logs: outside DVC's outputs, so a rerun that DVC
# starts by deleting the outputs still finds them.
RESUME_DIR = Path(".kiln/resume")
