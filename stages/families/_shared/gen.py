"""What the generative families (dcgan, vae, autoencoder) share: data, conditioning,
checkpoints, resume and dvclive.

Images are trained in [-1, 1] (tanh range). A family's checkpoint is a plain dict of
state_dicts + ``config`` + ``classes`` + ``epoch`` (+ family extras such as the fields
normalisation), saved atomically. The per-epoch resume file carries the run's fingerprint;
a rerun continues from it only when the fingerprint matches.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from stages.common.errors import StageError
from stages.common.schema import from_dict, to_dict
from stages.shared import checkpoint
from stages.shared.shards import Shard, load_shard


# --- data -------------------------------------------------------------------------
def read_shard(path: Path) -> Shard:
    """load_shard with the one-line StageError the stage drivers expect."""
    try:
        shard = load_shard(path)
    except FileNotFoundError as err:
        raise StageError(f"{path}: missing shard") from err
    except ValueError as err:
        raise StageError(str(err)) from err
    if len(shard) == 0:
        raise StageError(f"{path}: shard holds no images")
    return shard


def resize_uint8(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> uint8 (N, 3, size, size); a no-op at the same size."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    x = F.interpolate(images.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x.round().clamp(0, 255).to(torch.uint8)


def to_signed(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> float in [-1, 1]."""
    return images.float() / 127.5 - 1


@dataclass
class FieldScaler:
    """Maps the fields vector (N, F) to the conditioning the generator sees (kept in checkpoints).

    Without ``components`` it standardises every column. With them (``fit(..., components=K)``)
    it projects the centred fields on their top-K principal axes and whitens them: the demo's
    69 profile numbers are ~1 degree of freedom each, so near-unique per image, and a GAN
    conditioned on all of them can only memorise ~1,400 (image, fields) pairs; a few whitened
    shape axes (height, belly, neck...) carry the shape without naming the image. Values are
    clipped to +-``clip`` so an odd profile cannot push the generator off its training range.
    """
    mean: torch.Tensor                         # (F,)
    std: torch.Tensor                          # (F,) or, with components, (K,) per-axis scale
    components: torch.Tensor | None = None     # (F, K) principal axes
    clip: float = 3.0

    @classmethod
    def fit(cls, fields: torch.Tensor, components: int = 0) -> "FieldScaler":
        if fields.shape[1] == 0:
            return cls(torch.zeros(0), torch.ones(0))
        fields = fields.float()
        mean = fields.mean(0)
        if 0 < components < fields.shape[1]:
            _, singular, vh = torch.linalg.svd(fields - mean, full_matrices=False)
            scale = singular[:components] / max(1, len(fields) - 1) ** 0.5      # per-axis std
            return cls(mean, torch.where(scale > 1e-6, scale, torch.ones_like(scale)), vh[:components].T.contiguous())
        std = fields.std(0)
        return cls(mean, torch.where(std > 1e-6, std, torch.ones_like(std)))   # constant columns stay

    @property
    def dim(self) -> int:
        return len(self.std)

    def __call__(self, fields: torch.Tensor) -> torch.Tensor:
        centred = fields.float() - self.mean.to(fields.device)
        if self.components is None:
            return centred / self.std.to(fields.device)
        projected = centred @ self.components.to(fields.device) / self.std.to(fields.device)
        return projected.clamp(-self.clip, self.clip)

    def state(self) -> dict:
        state = {"mean": self.mean.tolist(), "std": self.std.tolist()}
        if self.components is not None:
            state.update(components=self.components.tolist(), clip=self.clip)
        return state

    @classmethod
    def from_state(cls, state: dict) -> "FieldScaler":
        components = state.get("components")
        return cls(torch.tensor(state["mean"], dtype=torch.float32), torch.tensor(state["std"], dtype=torch.float32),
                   None if components is None else torch.tensor(components, dtype=torch.float32).reshape(len(state["mean"]), -1),
                   float(state.get("clip", 3.0)))


def condition(labels: torch.Tensor, fields: torch.Tensor, num_classes: int, scaler: FieldScaler,
              use_fields: bool) -> torch.Tensor:
    """(B,) labels and (B, F) fields -> (B, C [+ F]) conditioning: one-hot class, scaled fields."""
    one_hot = F.one_hot(labels.long(), num_classes).float()
    if not use_fields or fields.shape[1] == 0:
        return one_hot
    return torch.cat([one_hot, scaler(fields)], dim=1)


# --- checkpoints and resume -------------------------------------------------------------
def load_checkpoint(path: Path) -> dict:
    """A checkpoint dict (weights_only: tensors and plain data, never code); StageError if unusable."""

    try:
        return checkpoint.load_checkpoint(path)
    except FileNotFoundError as err:
        raise StageError(f"{path}: no checkpoint (train the family first)") from err
    except ValueError as err:
        raise StageError(str(err)) from err


def load_model(path: Path, model_cls, config_cls, device) -> tuple[torch.nn.Module, dict]:
    """(model in eval mode on ``device``, checkpoint dict), the model rebuilt from the saved config."""

    ckpt = load_checkpoint(path)
    # a checkpoint saved before a key existed lacks it: read it as trained, not as the default
    stored = {**getattr(config_cls, "CHECKPOINT_LEGACY", {}), **ckpt["config"]}
    model = model_cls(from_dict(config_cls, stored, "checkpoint.config"))
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval(), ckpt


def load_resume(ctx) -> dict | None:
    """The last epoch's state when its fingerprint matches this run's, else None."""

    existed = ctx.resume_path.is_file()
    state = checkpoint.load_resume(ctx.resume_path, ctx.fingerprint)  # None: absent, damaged or stale
    if state is None and existed:
        print(f"{ctx.family}: {ctx.resume_path} is from other params or data (or damaged); starting afresh")
    elif state is not None:
        print(f"{ctx.family}: resuming after epoch {state['epoch']} from {ctx.resume_path}")
    return state


def save_resume(ctx, state: dict) -> None:
    checkpoint.save_checkpoint(ctx.resume_path, {**state, "fingerprint": ctx.fingerprint})


def finish(ctx, payload: dict) -> None:
    """Write the final checkpoint, then drop the resume file (training is complete)."""
    checkpoint.save_checkpoint(ctx.checkpoint_path, payload)
    ctx.resume_path.unlink(missing_ok=True)


def base_payload(ctx, classes: list[str], epoch: int) -> dict[str, Any]:
    return {"family": ctx.family, "config": to_dict(ctx.cfg), "classes": list(classes), "epoch": epoch,
            "image_size": int(ctx.cfg.image_size)}


# --- dvclive ----------------------------------------------------------------------
def open_live(ctx, resumed: bool):
    """A dvclive logger writing into ctx.metrics_dir, appending when the run resumed."""
    from stages.shared.live import FamilyLive

    return FamilyLive(ctx.family, dir=str(ctx.metrics_dir), resume=resumed)


class EpochTimer:
    """Wall and CPU seconds since the previous lap, logged per epoch to dvclive.

    CPU seconds (all threads) stay meaningful when other jobs share the cores; on an idle
    machine wall ~= cpu / threads in use.
    """

    def __init__(self):
        self.last = (time.perf_counter(), time.process_time())

    def lap(self) -> dict[str, float]:
        now = (time.perf_counter(), time.process_time())
        seconds = {"epoch_seconds": now[0] - self.last[0], "epoch_cpu_seconds": now[1] - self.last[1]}
        self.last = now
        return seconds
