"""params.yaml ``train.classifier`` and ``evaluate.classifier``."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from stages.common.schema import ParamsError, bounds
from stages.families.classifier.core.backbones import ARCHS, HeadConfig
from stages.families.classifier.core.finetune import PhasesConfig


@dataclass
class ClassifierConfig:
    arch: str = "bnconv"     # bnconv (from scratch) or a torchvision backbone (stages.backbones.ARCHS)
    widths: list[int] = field(default_factory=lambda: [16, 32, 64, 128])
    hidden: list[int] = field(default_factory=lambda: [128])
    dropout: float = field(default=0.1, metadata=bounds(ge=0, lt=1))
    head_dropout: float = field(default=0.3, metadata=bounds(ge=0, lt=1))
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = field(default=2e-3, metadata=bounds(gt=0, le=10))
    weight_decay: float = field(default=1e-4, metadata=bounds(ge=0))
    momentum: float = field(default=0.9, metadata=bounds(ge=0, lt=1))
    schedule: Literal["cosine", "step", "none"] = "cosine"
    step_size: int = field(default=5, metadata=bounds(ge=1))
    gamma: float = field(default=0.1, metadata=bounds(gt=0, le=1))
    batch_size: int = field(default=64, metadata=bounds(ge=1))
    epochs: int = field(default=12, metadata=bounds(ge=1))
    patience: int = field(default=5, metadata=bounds(ge=0))  # 0: no early stopping
    # fine-tuning only, never the probe; on a backbone it measured worse (bench/real_transfer.py:
    # smoothing after the probe's plain fit knocked val accuracy from 0.987 to 0.915 for an epoch)
    label_smoothing: float = field(default=0.0, metadata=bounds(ge=0, lt=1))
    # auto: bf16 autocast where the hardware has fast bf16 (CUDA, AVX512-BF16/AMX CPUs), else fp32
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    # backbones only: weights (torchvision enum name, state-dict file or kiln checkpoint; null:
    # random), input size (0: the weights' native size), head and fine-tuning phases
    weights: str | None = None
    input_size: int = field(default=0, metadata=bounds(ge=0, le=1024))
    head: HeadConfig = field(default_factory=HeadConfig)
    phases: PhasesConfig = field(default_factory=PhasesConfig)
    class_weights: Literal["split", "none", "balanced"] = "split"   # split: split.class_weights
    use_hpo: bool = False    # apply hpo@classifier's best params (train --input best_params=PATH)
    # processes training data-parallel (DDP) on this machine; > 1: the stage re-launches
    # itself through torchrun, each process a batch_size / nproc share of every batch
    nproc: int = field(default=1, metadata=bounds(ge=1, le=1024))

    def validate(self, path: str) -> None:
        if self.arch != "bnconv" and self.arch not in ARCHS:
            raise ParamsError(f"{path}.arch", f"unknown architecture {self.arch!r}; allowed: bnconv, {', '.join(ARCHS)}")
        if self.arch != "bnconv" and 0 < self.input_size < ARCHS[self.arch].min_size:
            raise ParamsError(f"{path}.input_size", f"{self.arch} needs at least {ARCHS[self.arch].min_size} px")
        if not self.widths or any(w < 1 for w in self.widths):
            raise ParamsError(f"{path}.widths", f"must be a non-empty list of positive ints (got {self.widths})")
        if any(h < 1 for h in self.hidden):
            raise ParamsError(f"{path}.hidden", f"must be positive ints (got {self.hidden})")
        if self.batch_size % self.nproc:
            raise ParamsError(f"{path}.nproc", f"must divide batch_size {self.batch_size} (got {self.nproc})")


@dataclass
class ClassifierEvalConfig:
    misclassified: int = field(default=32, metadata=bounds(ge=0, le=256))  # images in the grid
    topk: int = field(default=3, metadata=bounds(ge=1))
    heatmaps: int = field(default=16, metadata=bounds(ge=0, le=128))  # Grad-CAM images
    batch_size: int = field(default=256, metadata=bounds(ge=1))


TrainConfig = ClassifierConfig
EvaluateConfig = ClassifierEvalConfig
