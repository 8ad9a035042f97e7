"""The castle-dreamer filter: K independently trained keep/reject classifiers that vote.

Each member has one logit, P(keep) = sigmoid(logit), and is trained on its own bootstrap
sample with its own seed. A member is either a small ``stages.nets.BNConvNet`` trained
from scratch on the pixels (``arch: bnconv``) or a probe: a small head on the pooled
features of a frozen ImageNet network (``arch: mobilenet_v2``), which are computed once
per image and shared by every member. ``member_inputs`` gives what the members read. ``vote``
combines the members' probabilities; ``run_cascade`` applies several filters in
order, each seeing only the images the previous ones kept.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from stages.filter.labels import Example
from stages.shared.featnets import PooledEmbedding, embed
from stages.shared.nets import BNConvNet, to_float

VOTE_MODES = ("all", "majority", "mean")
PROBE_DIMS = {"mobilenet_v2": 1280}   # frozen trunk -> pooled feature size


class ProbeHead(nn.Module):
    """A member on frozen pretrained features (B, D): standardise, then an MLP to one logit.

    The standardisation is fitted on the member's own training sample and kept as buffers,
    so a saved state_dict scores new features on its own.
    """

    def __init__(self, in_dim: int, hidden: Sequence[int], dropout: float):
        super().__init__()
        self.register_buffer("mean", torch.zeros(in_dim))
        self.register_buffer("std", torch.ones(in_dim))
        layers, width = [], in_dim
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU(inplace=True), nn.Dropout(dropout)]
            width = size
        self.head = nn.Sequential(*layers, nn.Linear(width, 1))

    def fit_standardiser(self, features: torch.Tensor) -> None:
        self.mean.copy_(features.mean(0))
        std = features.std(0)
        # a floor relative to the typical spread: a feature nearly constant in the
        # training sample must not blow up on a new image where it fires
        self.std.copy_(std.clamp_min(0.1 * float(std.mean()) + 1e-8))

    def standardise_(self, features: torch.Tensor) -> torch.Tensor:
        """``features`` standardised in place (and returned): what ``forward`` feeds the head."""
        return features.sub_(self.mean).div_(self.std)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.head((features - self.mean) / self.std)


def build_member(net_cfg) -> nn.Module:
    """One ensemble member from ``filter.filters.<name>.net``."""
    if net_cfg.arch == "bnconv":
        return BNConvNet(num_classes=1, widths=tuple(net_cfg.widths), hidden=tuple(net_cfg.hidden),
                         dropout=net_cfg.dropout, head_dropout=net_cfg.dropout)
    if net_cfg.arch in PROBE_DIMS:
        return ProbeHead(PROBE_DIMS[net_cfg.arch], net_cfg.hidden, net_cfg.dropout)
    raise ValueError(f"unknown filter net arch {net_cfg.arch!r}")


def is_probe(net_cfg) -> bool:
    """Whether the members read a frozen trunk's features (else they read pixels)."""
    return net_cfg.arch in PROBE_DIMS


def probe_trunk(net_cfg) -> PooledEmbedding:
    """The frozen pretrained trunk a probe's features come from; build it once to embed many chunks."""
    return PooledEmbedding(net_cfg.arch, size=net_cfg.image_size)


def member_inputs(images: torch.Tensor, net_cfg, device: torch.device,
                  trunk: PooledEmbedding | None = None) -> torch.Tensor:
    """What the members read, for (N, 3, S, S) uint8 images: the images themselves for a
    convnet; (N, D) float32 pooled features of the frozen pretrained trunk for a probe
    (``trunk`` from ``probe_trunk``, built here when not given)."""
    if not is_probe(net_cfg):
        return images
    if len(images) == 0:
        return torch.zeros((0, PROBE_DIMS[net_cfg.arch]), dtype=torch.float32)
    return embed(trunk if trunk is not None else probe_trunk(net_cfg), images, device, batch=128).float()


def _model_input(batch: torch.Tensor, net_cfg, generator: torch.Generator | None) -> torch.Tensor:
    """Float model input of one batch: (augmented) normalised images for a convnet, features as they are."""
    if net_cfg.arch != "bnconv":
        return batch
    return to_float(augment_batch(batch, generator) if generator is not None else batch)


def vote(probs: np.ndarray, mode: str, threshold: float) -> np.ndarray:
    """Keep mask (N,) from member probabilities (K, N) of keep.

    all: every member >= threshold (unanimous); majority: more than half of the
    members >= threshold; mean: the members' mean probability >= threshold.
    """
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2:
        raise ValueError(f"probs must be (members, images), got shape {probs.shape}")
    passed = probs >= threshold                                   # (K, N)
    if mode == "all":
        return passed.all(axis=0)
    if mode == "majority":
        return passed.sum(axis=0) * 2 > probs.shape[0]
    if mode == "mean":
        return probs.mean(axis=0) >= threshold
    raise ValueError(f"unknown vote mode {mode!r}; allowed: {', '.join(VOTE_MODES)}")


def bootstrap_index(labels: np.ndarray, generator: np.random.Generator) -> np.ndarray:
    """A bootstrap sample (with replacement), drawn per label so both labels stay present."""
    picks = []
    for value in np.unique(labels):
        members = np.nonzero(labels == value)[0]
        picks.append(generator.choice(members, size=len(members), replace=True))
    return generator.permutation(np.concatenate(picks))


def augment_batch(images: torch.Tensor, generator: torch.Generator, max_shift: float = 0.1) -> torch.Tensor:
    """Cheap label-preserving variation of (B, 3, S, S) uint8 images: a mirror flip, a
    shift of up to ``max_shift`` of the side (wrapping round), and a random order of the
    colour channels (glaze and background colours vary freely, so colour is no cue)."""
    out = images.clone()
    flip = torch.rand(len(out), generator=generator) < 0.5
    out[flip] = out[flip].flip(-1)
    limit = max(1, int(images.shape[-1] * max_shift))
    dy, dx = (int(v) for v in torch.randint(-limit, limit + 1, (2,), generator=generator))
    out = torch.roll(out, shifts=(dy, dx), dims=(2, 3))
    perm = torch.randperm(3, generator=generator)
    return out[:, perm]


def epoch_order(labels: torch.Tensor, balance: bool, generator: torch.Generator) -> torch.Tensor:
    """Indices for one epoch: a shuffle of everything, or (balance) every rarer-label
    example plus as many of the common label, drawn afresh each epoch."""
    if not balance:
        return torch.randperm(len(labels), generator=generator)
    keep_idx, reject_idx = torch.nonzero(labels > 0.5).flatten(), torch.nonzero(labels < 0.5).flatten()
    n_each = min(len(keep_idx), len(reject_idx))
    if n_each == 0:
        return torch.randperm(len(labels), generator=generator)
    picks = [side[torch.randperm(len(side), generator=generator)[:n_each]] for side in (keep_idx, reject_idx)]
    order = torch.cat(picks)
    return order[torch.randperm(len(order), generator=generator)]


def train_member(inputs: torch.Tensor, labels: np.ndarray, net_cfg, seed: int,
                 device: torch.device) -> dict:
    """Train one member on a bootstrap sample; returns its state_dict (on CPU).

    inputs: from ``member_inputs`` ((N, 3, S, S) uint8 images or (N, D) features);
    labels: (N,) 1 = keep, 0 = reject. With ``balance`` each
    epoch sees every rarer-label example and an equal, fresh draw of the common label
    (under-sampling): a 10:1 imbalance no longer teaches "always keep", and an epoch costs
    2 x the rare count instead of N.
    """
    torch.manual_seed(seed)
    sample = bootstrap_index(labels, np.random.default_rng(seed))
    x_all, y_all = inputs[sample], torch.as_tensor(labels[sample], dtype=torch.float32)
    model = build_member(net_cfg)
    if isinstance(model, ProbeHead):
        model.fit_standardiser(x_all)
        if not net_cfg.hidden:
            # x_all is this member's own copy (the bootstrap gather): standardised in place,
            # once, instead of a new N x D copy at every L-BFGS evaluation
            return fit_linear_probe(model, model.standardise_(x_all), y_all, net_cfg, device)
    model = model.to(device)
    gen = torch.Generator().manual_seed(seed)
    epoch_size = len(epoch_order(y_all, net_cfg.balance, torch.Generator().manual_seed(0)))
    optimizer = torch.optim.AdamW(model.parameters(), lr=net_cfg.lr, weight_decay=net_cfg.weight_decay)
    steps = net_cfg.epochs * max(1, -(-epoch_size // net_cfg.batch_size))
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=net_cfg.lr, total_steps=steps)
    loss_fn = nn.BCEWithLogitsLoss()
    model.train()
    for _ in range(net_cfg.epochs):
        order = epoch_order(y_all, net_cfg.balance, gen)
        for start in range(0, len(order), net_cfg.batch_size):
            idx = order[start:start + net_cfg.batch_size]
            x = _model_input(x_all[idx], net_cfg, gen).to(device)     # (B, 3, S, S) or (B, D)
            loss = loss_fn(model(x).squeeze(1), y_all[idx].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


def fit_linear_probe(model: ProbeHead, standardised: torch.Tensor, labels: torch.Tensor, net_cfg,
                     device: torch.device) -> dict:
    """Logistic regression on standardised features, solved to convergence by full-batch L-BFGS.

    ``standardised``: the training features already standardised with the model's own
    buffers (``model.standardise_``), so each evaluation is one matrix product, not a fresh
    N x D copy. Minimises the (label-balanced, with ``balance``) mean cross-entropy +
    weight_decay/2 ||w||^2, the objective of scikit-learn's LogisticRegression with
    C = 1 / (weight_decay N). SGD on 1,280 features and a few hundred rejects stops short
    of that optimum and overfits the bootstrap sample; ``epochs`` caps the L-BFGS iterations.
    """
    model = model.to(device)
    x, y = standardised.to(device), labels.to(device)
    share = y.mean().clamp(1e-6, 1 - 1e-6)
    weight = torch.where(y > 0.5, 0.5 / share, 0.5 / (1 - share)) if net_cfg.balance else torch.ones_like(y)
    linear = model.head[-1]
    opt = torch.optim.LBFGS(model.parameters(), lr=1.0, max_iter=net_cfg.epochs, history_size=20,
                            line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        loss = (nn.functional.binary_cross_entropy_with_logits(linear(x).squeeze(1), y, reduction="none")
                * weight).mean() + 0.5 * net_cfg.weight_decay * linear.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


@torch.no_grad()
def member_probs(state: dict, net_cfg, inputs: torch.Tensor, device: torch.device,
                 batch_size: int = 256) -> np.ndarray:
    """P(keep) of one member for ``member_inputs`` (images or features) -> (N,)."""
    model = build_member(net_cfg).to(device)
    model.load_state_dict(state)
    model.eval()
    out = [torch.sigmoid(model(_model_input(inputs[s:s + batch_size], net_cfg, None).to(device)).squeeze(1)).cpu()
           for s in range(0, len(inputs), batch_size)]
    return torch.cat(out).numpy() if out else np.zeros(0, dtype=np.float32)


def ensemble_probs(states: Sequence[dict], net_cfg, inputs: torch.Tensor,
                   device: torch.device) -> np.ndarray:
    """(K, N) probabilities of keep, one row per member."""
    return np.stack([member_probs(s, net_cfg, inputs, device) for s in states]) if len(states) \
        else np.zeros((0, len(inputs)))


def run_cascade(filters: Sequence[tuple[str, Callable[[np.ndarray], np.ndarray]]],
                n_images: int, alive: np.ndarray | None = None) -> list[str | None]:
    """Apply filters in order; returns, per image, the name of the filter that rejected it.

    ``filters``: (name, decide) where decide(indices (M,)) -> keep mask (M,) for those
    images. Each filter sees only the images every earlier filter kept (and ``alive``,
    images not already rejected upstream, when given); None means kept by all.
    """
    rejected_by: list[str | None] = [None] * n_images
    alive = np.ones(n_images, dtype=bool) if alive is None else alive.copy()
    for name, decide in filters:
        index = np.nonzero(alive)[0]
        if len(index) == 0:
            break
        keep = np.asarray(decide(index), dtype=bool)
        for i in index[~keep]:
            rejected_by[i] = name
        alive[index[~keep]] = False
    return rejected_by


FILTER_PREFIX = "filter:"   # reason of an image an ensemble filter rejected, e.g. filter:object
ALL_CLASSES = "*"           # the key of a filter's one ensemble when it is not per class


@dataclass
class FilterRun:
    """One trained cascade filter and the labelled examples it saw."""
    name: str
    cfg: object                 # EnsembleFilter
    states: dict[str, list[dict]]   # member state_dicts by class (ALL_CLASSES unless per_class)
    seeds: list[int]
    examples: list[Example]
    held: np.ndarray            # (E,) bool: example held out for scoring
    heldout: dict               # precision / recall / F1 on the held-out examples
