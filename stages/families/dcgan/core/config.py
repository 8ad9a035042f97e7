"""params.yaml ``train.dcgan`` and ``evaluate.dcgan``."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from stages.common.schema import ParamsError, bounds
from stages.families._shared.convnets import validate_coarse
from stages.families.dcgan.core.nets import SIZES

POLICIES = ("color", "translation", "cutout")   # DiffAugment ops (train/augment.py)


@dataclass
class DCGANTrain:
    # Every default is the value params.yaml ships (the small-data recipe: spectral norm,
    # DiffAugment, EMA, TTUR, the coarse colour field). A checkpoint saved before a key existed
    # lacks it and was trained with the value below: read a stored config over these, never
    # over the defaults ({**CHECKPOINT_LEGACY, **ckpt["config"]}), so it loads as trained.
    CHECKPOINT_LEGACY: ClassVar[dict[str, Any]] = {"coarse_size": 0, "lr_d": 0.0, "spectral_norm": False,
                                                   "diff_augment": [], "ema_decay": 0.0, "crop": "none"}

    image_size: int = 64                  # 32 | 64 | 128
    crop: Literal["none", "box", "saliency"] = "none"   # box | saliency: train on object-centred crops (_shared/crop.py)
    crop_margin: float = field(default=1.0, metadata=bounds(ge=1, le=4))   # crop side / the box's longer side
    noise_dim: int = field(default=64, metadata=bounds(ge=1))
    gen_width: int = field(default=16, metadata=bounds(ge=4))    # generator channels at full size
    coarse_size: int = field(default=8, metadata=bounds(ge=0))   # G also paints a k x k colour field; 0: off
    disc_width: int = field(default=16, metadata=bounds(ge=4))
    condition_fields: bool = True         # condition on the fields vector as well as the class
    field_components: int = field(default=8, metadata=bounds(ge=0))   # fields -> top-K whitened PCA axes; 0: all, standardised
    per_class: bool = False               # one generator/discriminator pair per class
    epochs: int = field(default=60, metadata=bounds(ge=1))
    batch_size: int = field(default=32, metadata=bounds(ge=2))
    lr: float = field(default=2e-4, metadata=bounds(gt=0))              # generator's
    lr_d: float = field(default=4e-4, metadata=bounds(ge=0))            # discriminator's (TTUR); 0: = lr
    beta1: float = field(default=0.5, metadata=bounds(ge=0, lt=1))
    beta2: float = field(default=0.999, metadata=bounds(ge=0, lt=1))
    label_smoothing: list[float] = field(default_factory=lambda: [0.8, 1.0])   # real targets ~ U(lo, hi)
    aux_weight: float = field(default=1.0, metadata=bounds(ge=0))   # AC-GAN class loss; 0: off
    spectral_norm: bool = True            # spectral norm on every D layer instead of BN
    diff_augment: list[str] = field(default_factory=lambda: ["color", "translation"])   # color, translation, cutout
    ema_decay: float = field(default=0.999, metadata=bounds(ge=0, lt=1))  # sample from an EMA of G; 0: off
    precision: Literal["auto", "fp32", "bf16"] = "auto"   # auto: bf16 autocast where the CPU/GPU has it
    grid_per_class: int = field(default=8, metadata=bounds(ge=1, le=32))   # samples per class per epoch grid

    def validate(self, path: str) -> None:
        if self.image_size not in SIZES:
            raise ParamsError(f"{path}.image_size", f"must be one of {', '.join(map(str, SIZES))} (got {self.image_size})")
        lo_hi = self.label_smoothing
        if len(lo_hi) != 2 or not 0 < lo_hi[0] <= lo_hi[1] <= 1:
            raise ParamsError(f"{path}.label_smoothing", f"must be [lo, hi] with 0 < lo <= hi <= 1 (got {lo_hi})")
        validate_coarse(self, path)
        unknown = [p for p in self.diff_augment if p not in POLICIES]
        if unknown:
            raise ParamsError(f"{path}.diff_augment", f"unknown {unknown}; allowed: {', '.join(POLICIES)}")


@dataclass
class DCGANEvaluate:
    fid_network: str = "mobilenet_v2"     # pretrained features for FID/KID (metric names carry it)
    inception: bool = True                # also fid_inception_v3 when its weights are cached
    feature_size: int = field(default=224, metadata=bounds(ge=32, le=512))
    classifier: str = "classifier"        # family under models/ whose classifier labels samples; "": skip
    baseline_blur: float = field(default=2.0, metadata=bounds(gt=0))    # Gaussian sigma (px) of the baseline
    baseline_tiles: int = field(default=4, metadata=bounds(ge=1, le=16))  # tiles per side it shuffles
    kid_subsets: int = field(default=20, metadata=bounds(ge=1))
    grid_per_class: int = field(default=16, metadata=bounds(ge=1, le=64))


TrainConfig = DCGANTrain
EvaluateConfig = DCGANEvaluate
