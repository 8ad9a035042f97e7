"""dcgan: a conditional DCGAN (the borges ``clay`` GAN, done properly).

The generator sees noise and c = [one-hot class, standardised fields]; the discriminator
sees c through a projection and has an auxiliary class head. Real targets are smoothed to
U(lo, hi) as in clay. ``per_class: true`` trains one generator/discriminator pair per class
(clay's layout), otherwise one pair serves all classes.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from stages import genbase
from stages.families import register_family
from stages.families.dcgan_nets import SIZES, Discriminator, Generator, init_weights
from stages.schema import ParamsError, bounds

FIELD_BANK = 64   # training fields kept per class in the checkpoint, to sample without a shard


@dataclass
class DCGANTrain:
    image_size: int = 64                  # 32 | 64 | 128
    noise_dim: int = field(default=64, metadata=bounds(ge=1))
    gen_width: int = field(default=16, metadata=bounds(ge=4))    # generator channels at full size
    disc_width: int = field(default=16, metadata=bounds(ge=4))
    condition_fields: bool = True         # condition on the fields vector as well as the class
    per_class: bool = False               # one generator/discriminator pair per class
    epochs: int = field(default=30, metadata=bounds(ge=1))
    batch_size: int = field(default=32, metadata=bounds(ge=2))
    lr: float = field(default=2e-4, metadata=bounds(gt=0))
    beta1: float = field(default=0.5, metadata=bounds(ge=0, lt=1))
    label_smoothing: list[float] = field(default_factory=lambda: [0.8, 1.0])   # real targets ~ U(lo, hi)
    aux_weight: float = field(default=1.0, metadata=bounds(ge=0))   # AC-GAN class loss; 0: off
    grid_per_class: int = field(default=8, metadata=bounds(ge=1, le=32))   # samples per class per epoch grid

    def validate(self, path: str) -> None:
        if self.image_size not in SIZES:
            raise ParamsError(f"{path}.image_size", f"must be one of {', '.join(map(str, SIZES))} (got {self.image_size})")
        lo_hi = self.label_smoothing
        if len(lo_hi) != 2 or not 0 < lo_hi[0] <= lo_hi[1] <= 1:
            raise ParamsError(f"{path}.label_smoothing", f"must be [lo, hi] with 0 < lo <= hi <= 1 (got {lo_hi})")


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
        self.cond_dim = len(classes) + (field_dim if self.use_fields else 0)
        self.keys = list(classes) if cfg.per_class else ["all"]
        self.generators = {k: Generator(cfg.noise_dim, self.cond_dim, cfg.image_size, cfg.gen_width) for k in self.keys}
        self.discriminators = {k: Discriminator(self.cond_dim, cfg.image_size, cfg.disc_width, len(classes))
                               for k in self.keys}

    def key(self, label: int) -> str:
        return self.classes[label] if self.cfg.per_class else "all"

    def to(self, device) -> "GanSet":
        for net in (*self.generators.values(), *self.discriminators.values()):
            net.to(device)
        return self

    def cond(self, labels: torch.Tensor, fields: torch.Tensor) -> torch.Tensor:
        return genbase.condition(labels, fields, len(self.classes), self.scaler, self.use_fields)

    def state(self) -> dict:
        return {"generators": {k: g.state_dict() for k, g in self.generators.items()},
                "discriminators": {k: d.state_dict() for k, d in self.discriminators.items()},
                "scaler": self.scaler.state()}

    def load(self, state: dict) -> None:
        for k in self.keys:
            self.generators[k].load_state_dict(state["generators"][k])
            self.discriminators[k].load_state_dict(state["discriminators"][k])

    @torch.no_grad()
    def generate(self, labels: torch.Tensor, cond: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """(B,) labels, (B, C) conditions, (B, Z) noise -> (B, 3, S, S) in [-1, 1] (eval mode)."""
        out = torch.empty(len(labels), 3, self.cfg.image_size, self.cfg.image_size, device=noise.device)
        for key in self.keys:
            picked = torch.ones_like(labels, dtype=torch.bool) if key == "all" else labels == self.classes.index(key)
            if picked.any():
                gen = self.generators[key].eval()
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
