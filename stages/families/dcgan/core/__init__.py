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

import torch

from stages.common.schema import from_dict
from stages.families._shared import gen as genbase
from stages.families.dcgan.core.config import DCGANTrain
from stages.families.dcgan.core.nets import Discriminator, Generator

FIELD_BANK = 64   # training fields kept per class in the checkpoint, to sample without a shard


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
    ckpt = genbase.load_checkpoint(path)
    # a checkpoint saved before a key existed lacks it: read it as trained, not as the default
    cfg = from_dict(DCGANTrain, {**DCGANTrain.CHECKPOINT_LEGACY, **ckpt["config"]}, "checkpoint.config")
    gans = GanSet(cfg, ckpt["classes"], genbase.FieldScaler.from_state(ckpt["scaler"]), ckpt["field_dim"])
    gans.load(ckpt)
    return gans.to(device), ckpt


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation of noise vectors a, b (Z,) at weights t (T,) -> (T, Z): every
    point keeps a Gaussian vector's norm, so no frame is the washed-out image of a short z."""
    omega = torch.arccos((a / a.norm() * b / b.norm()).sum().clamp(-1 + 1e-6, 1 - 1e-6))
    return (torch.sin((1 - t) * omega)[:, None] * a + torch.sin(t * omega)[:, None] * b) / torch.sin(omega)


def class_walk(gans: GanSet, bank: dict, label: int, chains: int, keys: int, steps: int, seed: int,
               device) -> torch.Tensor:
    """A looping walk through ``keys`` random (noise, fields) points of one class, ``chains`` walks
    side by side: (keys * steps, chains, 3, S, S) in [-1, 1], one GIF frame per first index.

    Noise moves along great circles (slerp) and the fields linearly between training rows of the
    class, so every frame is a pot the model was asked for."""
    gen = torch.Generator().manual_seed(seed)
    rows = torch.tensor(bank[gans.classes[label]] or [[]], dtype=torch.float32)
    t = torch.arange(steps, dtype=torch.float32) / steps
    noise_key = torch.randn(chains, keys, gans.cfg.noise_dim, generator=gen)
    field_key = rows[torch.randint(len(rows), (chains, keys), generator=gen)]       # (chains, keys, F)
    noise, fields = [], []
    for k in range(keys):
        nxt = (k + 1) % keys
        noise.append(torch.stack([slerp(noise_key[c, k], noise_key[c, nxt], t) for c in range(chains)], 1))
        fields.append(field_key[:, k][None] * (1 - t)[:, None, None] + field_key[:, nxt][None] * t[:, None, None])
    noise, fields = torch.cat(noise).flatten(0, 1), torch.cat(fields).flatten(0, 1)   # (keys*steps*chains, .)
    labels = torch.full((len(noise),), label)
    images = gans.generate(labels.to(device), gans.cond(labels, fields).to(device), noise.to(device)).cpu()
    return images.view(keys * steps, chains, *images.shape[1:])


def grid_inputs(gans: GanSet, bank: dict, per_class: int, seed: int, device):
    """Fixed (labels, conditions, noise) for the per-epoch grids: one row per class."""
    gen = torch.Generator().manual_seed(seed)
    labels, fields = [], []
    for index, name in enumerate(gans.classes):
        rows = torch.tensor(bank[name] or [[]] * per_class, dtype=torch.float32)
        pick = torch.randint(len(rows), (per_class,), generator=gen) if len(rows) else torch.zeros(per_class).long()
        labels += [index] * per_class
        fields.append(rows[pick] if rows.numel() else torch.zeros(per_class, 0))
    labels = torch.tensor(labels)
    cond = gans.cond(labels, torch.cat(fields))
    noise = torch.randn(len(labels), gans.cfg.noise_dim, generator=gen)
    return labels.to(device), cond.to(device), noise.to(device)
