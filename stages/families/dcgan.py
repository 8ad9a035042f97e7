"""dcgan: a conditional DCGAN (the borges ``clay`` GAN, done properly).

The generator sees noise and c = [one-hot class, fields projected on their top-K whitened
principal axes (``field_components``)]; the discriminator
sees c through a projection and has an auxiliary class head. Real targets are smoothed to
U(lo, hi) as in clay. ``per_class: true`` trains one generator/discriminator pair per class
(clay's layout), otherwise one pair serves all classes.

What makes it train on ~1,400 images: a spectrally normalised D (no BN), DiffAugment on
everything D sees, a faster D than G (TTUR) and an exponential moving average of G's
weights that samples are drawn from (the raw G oscillates from step to step). Conditioning
on all 69 fields numbers made each (image, fields) pair near-unique, so D and G could only
memorise them (FID 340 vs 264 without fields); 8 PCA axes keep the shape, not the identity.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F

from stages import genbase
from stages.families import register_family
from stages.families.dcgan_augment import POLICIES
from stages.families.convnets import validate_coarse
from stages.families.dcgan_nets import SIZES, Discriminator, Generator, init_weights
from stages.schema import ParamsError, bounds

FIELD_BANK = 64   # training fields kept per class in the checkpoint, to sample without a shard


@dataclass
class DCGANTrain:
    image_size: int = 64                  # 32 | 64 | 128
    noise_dim: int = field(default=64, metadata=bounds(ge=1))
    gen_width: int = field(default=16, metadata=bounds(ge=4))    # generator channels at full size
    coarse_size: int = field(default=0, metadata=bounds(ge=0))   # G also paints a k x k colour field; 0: off
    disc_width: int = field(default=16, metadata=bounds(ge=4))
    condition_fields: bool = True         # condition on the fields vector as well as the class
    field_components: int = field(default=8, metadata=bounds(ge=0))   # fields -> top-K whitened PCA axes; 0: all, standardised
    per_class: bool = False               # one generator/discriminator pair per class
    epochs: int = field(default=30, metadata=bounds(ge=1))
    batch_size: int = field(default=32, metadata=bounds(ge=2))
    lr: float = field(default=2e-4, metadata=bounds(gt=0))              # generator's
    lr_d: float = field(default=0.0, metadata=bounds(ge=0))             # discriminator's (TTUR); 0: = lr
    beta1: float = field(default=0.5, metadata=bounds(ge=0, lt=1))
    beta2: float = field(default=0.999, metadata=bounds(ge=0, lt=1))
    label_smoothing: list[float] = field(default_factory=lambda: [0.8, 1.0])   # real targets ~ U(lo, hi)
    aux_weight: float = field(default=1.0, metadata=bounds(ge=0))   # AC-GAN class loss; 0: off
    spectral_norm: bool = False           # spectral norm on every D layer instead of BN
    diff_augment: list[str] = field(default_factory=list)   # DiffAugment policy: color, translation, cutout
    ema_decay: float = field(default=0.0, metadata=bounds(ge=0, lt=1))   # sample from an EMA of G; 0: off
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


# --- models ------------------------------------------------------------------------
class GanSet:
    """One (generator, discriminator) pair for all classes, or one per class."""

    def __init__(self, cfg: DCGANTrain, classes: list[str], scaler: genbase.FieldScaler, field_dim: int):
        self.cfg, self.classes, self.scaler = cfg, list(classes), scaler
        self.use_fields = cfg.condition_fields and field_dim > 0
        self.cond_dim = len(classes) + (scaler.dim if self.use_fields else 0)
        self.keys = list(classes) if cfg.per_class else ["all"]
        self.generators = {k: Generator(cfg.noise_dim, self.cond_dim, cfg.image_size, cfg.gen_width,
                                       cfg.coarse_size) for k in self.keys}
        self.discriminators = {k: Discriminator(self.cond_dim, cfg.image_size, cfg.disc_width, len(classes),
                                                cfg.spectral_norm) for k in self.keys}
        self.ema = {}   # key -> EMA copy of the generator (start_ema), what generate() samples from
        self.ema_steps = {k: 0 for k in self.keys}

    def start_ema(self) -> None:
        """Begin the weight average from the generators as they are now (after init or resume)."""
        if self.cfg.ema_decay > 0:
            self.ema = {k: copy.deepcopy(g).eval().requires_grad_(False) for k, g in self.generators.items()}

    @torch.no_grad()
    def update_ema(self, key: str) -> None:
        """ema <- d * ema + (1 - d) * G; BN running stats are copied (they are averages already).

        d ramps up as (1 + t) / (10 + t) to ema_decay: a run is only ~1-2k steps, and a fixed
        0.999 would still be mostly the random init at the end.
        """
        if not self.ema:
            return
        self.ema_steps[key] += 1
        t = self.ema_steps[key]
        decay = min(self.cfg.ema_decay, (1 + t) / (10 + t))
        ema, live = self.ema[key], self.generators[key]
        for e, p in zip(ema.parameters(), live.parameters()):
            e.lerp_(p, 1 - decay)
        for e, b in zip(ema.buffers(), live.buffers()):
            e.copy_(b)

    def key(self, label: int) -> str:
        return self.classes[label] if self.cfg.per_class else "all"

    def to(self, device) -> "GanSet":
        for net in (*self.generators.values(), *self.discriminators.values(), *self.ema.values()):
            net.to(device)
        return self

    def cond(self, labels: torch.Tensor, fields: torch.Tensor) -> torch.Tensor:
        return genbase.condition(labels, fields, len(self.classes), self.scaler, self.use_fields)

    def state(self) -> dict:
        ema = {"generators_ema": {k: g.state_dict() for k, g in self.ema.items()},
               "ema_steps": dict(self.ema_steps)} if self.ema else {}
        return {"generators": {k: g.state_dict() for k, g in self.generators.items()},
                "discriminators": {k: d.state_dict() for k, d in self.discriminators.items()},
                "scaler": self.scaler.state(), **ema}

    def load(self, state: dict) -> None:
        for k in self.keys:
            self.generators[k].load_state_dict(state["generators"][k])
            self.discriminators[k].load_state_dict(state["discriminators"][k])
        self.start_ema()
        for k, net in self.ema.items():
            net.load_state_dict(state.get("generators_ema", state["generators"])[k])
            self.ema_steps[k] = int(state.get("ema_steps", {}).get(k, 0))

    @torch.no_grad()
    def generate(self, labels: torch.Tensor, cond: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """(B,) labels, (B, C) conditions, (B, Z) noise -> (B, 3, S, S) in [-1, 1] (eval mode)."""
        out = torch.empty(len(labels), 3, self.cfg.image_size, self.cfg.image_size, device=noise.device)
        for key in self.keys:
            picked = torch.ones_like(labels, dtype=torch.bool) if key == "all" else labels == self.classes.index(key)
            if picked.any():
                gen = self.ema[key] if self.ema else self.generators[key].eval()
                out[picked] = gen(noise[picked], cond[picked])
        return out


def field_bank(shard) -> dict[str, list[list[float]]]:
    """Up to FIELD_BANK training fields rows per class, to sample a class without a shard."""
    bank = {}
    for index, name in enumerate(shard.classes):
        rows = (shard.labels == index).nonzero().flatten()[:FIELD_BANK]
        bank[name] = shard.fields[rows].tolist()
    return bank


def load_gan(path, device) -> tuple[GanSet, dict]:
    """Rebuild a trained GanSet from models/dcgan/model.pt; returns it and the checkpoint."""
    from stages.schema import from_dict

    ckpt = genbase.load_checkpoint(path)
    cfg = from_dict(DCGANTrain, ckpt["config"], "checkpoint.config")
    gans = GanSet(cfg, ckpt["classes"], genbase.FieldScaler.from_state(ckpt["scaler"]), ckpt["field_dim"])
    gans.load(ckpt)
    return gans.to(device), ckpt


def train(ctx) -> None:
    """train@dcgan (the loop lives in dcgan_train.py)."""
    from stages.families.dcgan_train import train as run

    run(ctx)


def evaluate(ctx) -> dict:
    """evaluate@dcgan (in dcgan_eval.py, imported when the stage runs)."""
    from stages.families.dcgan_eval import evaluate as run

    return run(ctx)


register_family("dcgan", train_config=DCGANTrain,
                evaluate_config=DCGANEvaluate, train=train, evaluate=evaluate)
