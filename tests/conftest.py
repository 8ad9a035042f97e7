"""Shared fixtures: the repo root, a python that runs stages, tiny params."""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


def stage_env() -> dict[str, str]:
    """Environment for subprocesses: this interpreter first on PATH, the repo importable."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = f"{REPO}{os.pathsep}{env.get('PYTHONPATH', '')}".rstrip(os.pathsep)
    env.setdefault("OMP_NUM_THREADS", "1")  # tiny models: one thread is fastest
    return env


def load_repo_params() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())


def write_params(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def load_all_params(path: Path):
    """Every section of a params.yaml, each built by the dataclass of the stage that reads it:
    base, demo, crawl, filter, split, augment, families, and train / evaluate / hpo as
    ``{family: config}`` for each listed family (hpo only where ``hpo.<family>`` is present).
    ``.file`` is the ParamsFile. What no single stage loads, for tests of the whole file."""
    from stages.augment.config import Augment
    from stages.common.params import Base, read_params
    from stages.crawl.config import Crawl
    from stages.demo.config import Demo
    from stages.families import family_section, read_families
    from stages.filter.config import Filter
    from stages.hpo.config import HpoConfig
    from stages.split.config import Split

    params_file = read_params(path)
    params = params_file.load({"base": Base, "demo": Demo, "crawl": Crawl, "filter": Filter,
                               "split": Split, "augment": Augment})
    params.families = read_families(params_file)
    for kind in ("train", "evaluate"):
        sections = {name: family_section(params_file, kind, name) for name in params.families}
        setattr(params, kind, {name: cfg for name, cfg in sections.items() if cfg is not None})
    params.hpo = {name: params_file.section(f"hpo.{name}", HpoConfig) for name in params.families
                  if params_file.raw(f"hpo.{name}") is not None}
    params.file = params_file
    return params


def train_params(data: dict, root: Path, family: str = "classifier"):
    """What train@<family> loads from ``data`` (written to ``root``/params.yaml): base,
    families, ``train[family]``, augment.online, split.class_weights."""
    from stages.families import load_family_params
    from stages.shared.training import TRAIN_SECTIONS

    return load_family_params(write_params(root / "params.yaml", data), family, ("train",), TRAIN_SECTIONS)


def key_line(path: Path, dotted: str) -> int:
    """1-based line of a dotted key in a block-style YAML file (as yaml.safe_dump writes it),
    found by reading the text: each part is the first key at the next indent below its parent."""
    lines = path.read_text().splitlines()
    start, indent, found = 0, 0, 0
    for part in dotted.split("."):
        if part.isdigit():   # safe_dump writes a list's items at its key's indent: "- item"
            pad, items = " " * (indent - 2), []
            for i in range(start, len(lines)):
                if lines[i].startswith(pad + "- "):
                    items.append(i)
                elif not lines[i].startswith(pad + " "):   # the list ended
                    break
            if int(part) >= len(items):
                raise KeyError(f"{dotted}: item {part} not found in {path}")
            found = items[int(part)] + 1
            start = found
            continue
        for i in range(start, len(lines)):
            if lines[i].startswith(" " * indent + f"{part}:"):
                start, indent, found = i + 1, indent + 2, i + 1
                break
        else:
            raise KeyError(f"{dotted}: {part!r} not found in {path}")
    return found


@pytest.fixture
def repo_params() -> dict:
    return load_repo_params()


def copy_pipeline(root: Path) -> None:
    """What a kiln checkout runs `dvc repro` with: the stages, dvc.yaml and the labels folder
    (the filter stage's dep, where kiln review writes)."""
    shutil.copytree(REPO / "stages", root / "stages", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "dvc.yaml", root / "dvc.yaml")
    shutil.copytree(REPO / "labels", root / "labels")
