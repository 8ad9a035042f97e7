"""Checkpoints as dicts of state_dicts and plain data, saved atomically, never pickled modules."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from stages.common.io import atomic_path


def write_torch(path: str | Path, payload: Any) -> None:
    """torch.save through an open file: the zip archive inside is then always named ``archive``.
    Saved to a path, torch names it after the file, and an atomic write's random temp name
    made identical work give different bytes (and DVC rerun everything downstream)."""
    with open(path, "wb") as fh:
        torch.save(payload, fh)


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        write_torch(tmp, payload)


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as err:  # a damaged file raises one of several types
        raise ValueError(f"{path}: not a readable kiln checkpoint ({err.__class__.__name__}: {err})") from err


def load_resume(path: Path, fingerprint: str) -> dict[str, Any] | None:
    """The killed run's last-epoch state, if it belongs to this exact config and data."""
    if not path.is_file():
        return None
    try:
        state = load_checkpoint(path)
    except ValueError:
        path.unlink(missing_ok=True)  # unreadable: start over rather than fail
        return None
    if state.get("fingerprint") != fingerprint:
        path.unlink(missing_ok=True)  # a different config or data: a stale run
        return None
    return state


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
