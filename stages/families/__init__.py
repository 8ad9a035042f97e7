"""Model family registry (timm's register_model idea).

A family module calls ``register_family`` at import time with its config
dataclasses and its ``train`` / ``evaluate`` entry points. ``get_family`` imports
the module lazily, so parsing params.yaml pulls in only the families it names.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

# name -> module that registers it; a new family adds one line here.
FAMILY_MODULES = {
    "classifier": "stages.families.classifier",
    "dcgan": "stages.families.dcgan",
    "vae": "stages.families.vae",
    "autoencoder": "stages.families.autoencoder",
}


@dataclass(frozen=True)
class Family:
    name: str
    train_config: type | None      # dataclass for params.yaml ``train.<name>``
    evaluate_config: type | None   # dataclass for ``evaluate.<name>``
    train: Callable                # train(ctx: stages.train.TrainContext) -> None
    evaluate: Callable             # evaluate(ctx: stages.evaluate.EvalContext) -> dict
    hpo_config: type | None = None  # dataclass for ``hpo.<name>`` when the family supports hpo


_REGISTRY: dict[str, Family] = {}


def register_family(name: str, **kwargs) -> Family:
    family = Family(name=name, **kwargs)
    _REGISTRY[name] = family
    return family


def family_names() -> list[str]:
    return list(FAMILY_MODULES)


def get_family(name: str) -> Family:
    if name not in FAMILY_MODULES:
        raise KeyError(f"unknown family {name!r}; known: {', '.join(FAMILY_MODULES)}")
    if name not in _REGISTRY:
        importlib.import_module(FAMILY_MODULES[name])
    return _REGISTRY[name]
