"""How one trial runs: the trial config, in-process or in a process pool."""
from __future__ import annotations

import time
from typing import Any

import torch

from stages.common.schema import ParamsError, from_dict
from stages.families import family_module
from stages.hpo.config import load_hpo_params
from stages.shared.overrides import apply_overrides
from stages.shared.runtime import pick_device, seed_everything
from stages.shared.shards import load_shard

# One trial process's state: params and shards loaded once, then many trials from memory.
_WORKER: dict[str, Any] = {}


def trial_config(params, family: str):
    """The trials' base config: ``hpo.<family>.trial`` parsed as the family's train config."""

    config_cls = family_module(family, "core.config").TrainConfig
    return from_dict(config_cls, params.hpo[family].trial, f"hpo.{family}.trial")


def _worker_init(params_path: str, family: str, train_path: str, val_path: str, threads: int) -> None:
    """Load params and shards once per process; trials then train from memory."""


    params = load_hpo_params(params_path, family)
    hpo = params.hpo[family]
    train = load_shard(train_path)
    if hpo.max_train and len(train) > hpo.max_train:
        pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(params.base.seed))
        train = train.subset(pick[:hpo.max_train].sort().values)
    torch.set_num_threads(max(1, threads))
    _WORKER.update(params=params, family=family, cfg=trial_config(params, family),
                   train=train, val=load_shard(val_path),
                   device=pick_device(params.base.device), trainer=trial_function(family))


def trial_function(family: str):
    """The family's ``hpo_trial(cfg, train, val, *, params, device) -> {val_accuracy, val_loss}``."""


    trainer = getattr(family_module(family, "train"), "hpo_trial", None)
    if trainer is None:
        raise ParamsError(f"hpo.{family}", f"family {family!r} does not support hpo (no hpo_trial)")
    return trainer


def _worker_trial(overrides: dict[str, Any]) -> dict:

    w = _WORKER
    trial_epochs = w["params"].hpo[w["family"]].trial_epochs
    if trial_epochs and "epochs" not in overrides:  # a short run, unless epochs is searched
        overrides = {"epochs": trial_epochs, **overrides}
    cfg = apply_overrides(w["cfg"], overrides, f"hpo.{w['family']}.space")
    seed_everything(w["params"].base.seed)   # every trial starts from the same initialisation
    start = time.perf_counter()
    result = w["trainer"](cfg, w["train"], w["val"], params=w["params"], device=w["device"])
    return {"val_accuracy": float(result["val_accuracy"]), "val_loss": float(result["val_loss"]),
            "seconds": round(time.perf_counter() - start, 2)}


def in_process(points: list[dict]):
    for i, overrides in enumerate(points):
        yield i, _worker_trial(overrides)


class PoolEvaluator:
    """Trains a batch of points at once, one per worker process (spawned: no forked torch state)."""

    def __init__(self, n_jobs: int, initargs: tuple):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        self.pool = ProcessPoolExecutor(n_jobs, mp_context=multiprocessing.get_context("spawn"),
                                        initializer=_worker_init, initargs=initargs)

    def __call__(self, points: list[dict]):
        from concurrent.futures import as_completed

        futures = {self.pool.submit(_worker_trial, p): i for i, p in enumerate(points)}
        for future in as_completed(futures):
            yield futures[future], future.result()

    def close(self) -> None:
        self.pool.shutdown(cancel_futures=True)
