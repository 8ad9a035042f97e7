"""Shared fixtures: the repo root, a python that runs stages, tiny params."""
from __future__ import annotations

import os
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


@pytest.fixture
def repo_params() -> dict:
    return load_repo_params()
