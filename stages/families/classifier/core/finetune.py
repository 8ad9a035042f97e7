"""Fine-tuning in phases for a TransferNet (the decathlon recipe, generalised).

Before any epoch, the probe (``probe_epochs`` > 0, train/probe.py) fits the head on the frozen
trunk's pooled features, computed once: a good head in seconds, so fine-tuning starts from
it instead of tearing the trunk apart with a random head's gradients.

Phase 1 (the first ``head_epochs`` epochs) trains the head on a frozen trunk at the base
learning rate. Phase 2 (the remaining epochs of the classifier's ``epochs``) unfreezes the
trunk's last ``blocks`` blocks (``last``), all of it (``all``), or one more block every
``every`` epochs up to ``blocks`` (``progressive``), and trains the head at lr x
``lr_factor`` and the unfrozen blocks ``trunk_lr_factor`` times lower still (pretrained
features need small steps; with Adam, a trunk rate near the head's knocked catsdogs' val
accuracy down for epochs). ``unfreeze: none`` trains the head alone throughout (fine-tuning
off). ``bn: frozen`` keeps every trunk batch-norm layer in eval mode while fine-tuning: its
ImageNet running statistics are better estimates than a few small batches of a small
dataset give (its scale and shift still train; ``bn: train`` measured 0.987 vs 0.990).
The defaults are bench/real_transfer.py's measurements on MobileNetV2 (19 blocks; training
the last 8 steps ~4x faster than training all, bf16 on 2 cores); a trunk with fewer blocks
unfreezes all it has.

The training loop asks ``phase_at`` each epoch; when the phase changes it calls
``apply_phase`` and rebuilds its optimizer from ``param_groups`` (frozen parameters are
left out, so they get no gradient and no weight decay).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from torch import nn

from stages.common.schema import ParamsError, bounds


@dataclass
class PhasesConfig:
    probe_epochs: int = field(default=100, metadata=bounds(ge=0))  # head fit on cached features; 0: off
    head_epochs: int = field(default=0, metadata=bounds(ge=0))   # phase 1; the rest is phase 2
    unfreeze: Literal["none", "last", "all", "progressive"] = "last"
    blocks: int = field(default=8, metadata=bounds(ge=0))   # K; 0 with progressive: up to all
    lr_factor: float = field(default=0.1, metadata=bounds(gt=0.0, le=1.0))   # phase 2 head: lr x this
    trunk_lr_factor: float = field(default=0.25, metadata=bounds(gt=0.0, le=1.0))  # trunk: head's x this
    bn: Literal["frozen", "train"] = "frozen"   # trunk batch norm while fine-tuning
    every: int = field(default=1, metadata=bounds(ge=1))    # progressive: epochs per extra block

    def validate(self, path: str) -> None:
        if self.unfreeze == "last" and self.blocks < 1:
            raise ParamsError(f"{path}.blocks", "must be >= 1 with unfreeze: last")


@dataclass(frozen=True)
class Phase:
    name: Literal["head", "finetune"]
    trainable_blocks: int   # trunk blocks trainable, counted from the output end
    lr_scale: float         # multiplies the base learning rate: the head's group
    trunk_scale: float = 1.0   # multiplies the head's rate again: the trunk's group
    bn_frozen: bool = False    # trunk batch norm in eval mode (running statistics kept)


def phase_at(cfg: PhasesConfig, epoch: int, n_blocks: int) -> Phase:
    """The phase of 0-based ``epoch`` for a trunk of ``n_blocks`` blocks."""
    if epoch < cfg.head_epochs or cfg.unfreeze == "none":
        return Phase("head", 0, 1.0)
    step = epoch - cfg.head_epochs
    if cfg.unfreeze == "all":
        k = n_blocks
    elif cfg.unfreeze == "last":
        k = cfg.blocks
    else:  # progressive: 1, 2, ... blocks, one more every ``every`` epochs
        k = min(cfg.blocks or n_blocks, 1 + step // cfg.every)
    return Phase("finetune", min(k, n_blocks), cfg.lr_factor, cfg.trunk_lr_factor, cfg.bn == "frozen")


def phase_span(cfg: PhasesConfig, epochs: int, epoch: int) -> tuple[int, int]:
    """[start, end) epochs of the phase holding ``epoch``: each phase gets its own LR schedule."""
    if cfg.unfreeze == "none" or cfg.head_epochs >= epochs:
        return 0, epochs
    return (0, cfg.head_epochs) if epoch < cfg.head_epochs else (cfg.head_epochs, epochs)


def apply_phase(model: nn.Module, phase: Phase) -> None:
    """Freeze all but the last ``phase.trainable_blocks`` trunk blocks; the head always trains."""
    blocks = model.blocks()
    first_trainable = len(blocks) - phase.trainable_blocks
    model.frozen = [i < first_trainable for i in range(len(blocks))]
    model.bn_frozen = phase.bn_frozen
    for p in model.backbone.parameters():  # parameters outside blocks (none today) stay frozen
        p.requires_grad_(False)
    for block, frozen in zip(blocks, model.frozen):
        for p in block.parameters():
            p.requires_grad_(not frozen)
    for p in model.head.parameters():
        p.requires_grad_(True)
    model.train(model.training)  # re-apply: frozen blocks back to eval mode (BN statistics)


def param_groups(model: nn.Module, phase: Phase, lr: float, weight_decay: float = 0.0) -> list[dict]:
    """Optimizer groups of the trainable parameters: the head and, in phase 2, the unfrozen trunk."""
    groups = [{"params": [p for p in model.head.parameters()], "lr": lr * phase.lr_scale,
               "weight_decay": weight_decay, "name": "head"}]
    trunk = [p for p in model.backbone.parameters() if p.requires_grad]
    if trunk:
        groups.append({"params": trunk, "lr": lr * phase.lr_scale * phase.trunk_scale,
                       "weight_decay": weight_decay, "name": "trunk"})
    return groups


def enter_phase(model: nn.Module, cfg: PhasesConfig, epoch: int, lr: float,
                weight_decay: float = 0.0) -> tuple[list[dict], Phase]:
    """For the training loop, once per epoch: freeze/unfreeze and return (param groups, phase)."""
    phase = phase_at(cfg, epoch, len(model.blocks()))
    apply_phase(model, phase)
    return param_groups(model, phase, lr, weight_decay), phase


def trainable_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)

