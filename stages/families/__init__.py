"""Model families, found by discovery: every folder here not starting with ``_`` is one.

A family folder holds three packages, one per role, so dvc.yaml can give each stage the
code it runs and nothing more:

    <name>/core/       config.py (TrainConfig, EvaluateConfig), the networks, loading a
                       checkpoint: what train, evaluate and the tools share
    <name>/train/      train(ctx) [, hpo_trial(...) when the family supports hpo@]
    <name>/evaluate/   evaluate(ctx) -> metrics

Adding a family is adding a folder (and its ``train.<name>`` / ``evaluate.<name>``
sections in params.yaml). Stages import a family's role module by name; nothing here
imports a family until asked.
"""
from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

from stages.common.errors import StageError
from stages.common.params import Base, ParamsFile, read_params
from stages.common.schema import ParamsError

FAMILIES_DIR = Path(__file__).parent
ROLES = ("core", "train", "evaluate")


def family_names() -> list[str]:
    return sorted(p.name for p in FAMILIES_DIR.iterdir()
                  if not p.name.startswith("_") and (p / "__init__.py").is_file())


def family_module(name: str, role: str) -> ModuleType:
    """``stages.families.<name>.<role>`` (role: core, train, evaluate, or core.config)."""
    if name not in family_names():
        raise KeyError(f"unknown family {name!r}; known: {', '.join(family_names())}")
    return importlib.import_module(f"stages.families.{name}.{role}")


def read_families(params_file: ParamsFile) -> list[str]:
    """params.yaml ``families``: a non-empty list of known family names."""
    families = params_file.section("families", list[str])
    known = family_names()
    if not families:
        raise params_file.located(ParamsError("families", f"must be a non-empty list; known: {', '.join(known)}"))
    for i, name in enumerate(families):
        if name not in known:
            raise params_file.located(ParamsError(f"families.{i}", f"unknown family {name!r}; allowed: {', '.join(known)}"))
    return families


def family_section(params_file: ParamsFile, kind: str, name: str) -> Any:
    """``<kind>.<name>`` (kind: train | evaluate) with the family's own dataclass, or None."""
    config_cls = getattr(family_module(name, "core.config"), f"{kind.capitalize()}Config", None)
    section = params_file.raw(kind)
    if section is not None and not isinstance(section, dict):
        raise params_file.located(ParamsError(kind, f"must be a mapping of family name to settings (got {section!r})"))
    for other in section or {}:
        if other not in family_names():
            raise params_file.located(ParamsError(f"{kind}.{other}", f"unknown family; allowed: {', '.join(family_names())}"))
    return None if config_cls is None else params_file.section(f"{kind}.{name}", config_cls)


def load_family_params(path: str | Path, family: str, kinds: tuple[str, ...],
                       extra: dict[str, type] | None = None) -> SimpleNamespace:
    """What a family stage reads: ``base``, ``families``, ``<kind>.<family>`` for each kind
    (as ``params.<kind>[family]``) and the ``extra`` dotted sections."""
    params_file = read_params(path)
    params = params_file.load({"base": Base, **(extra or {})})
    params.families = read_families(params_file)
    if family not in params.families:
        raise StageError(f"family {family!r} is not listed in params.yaml families: {params.families}")
    for kind in kinds:
        setattr(params, kind, {family: family_section(params_file, kind, family)})
    params.file = params_file   # for sections a stage parses with its own dataclass (hpo.<family>)
    return params
