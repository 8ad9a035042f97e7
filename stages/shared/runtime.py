"""Seeding, device choice, thread settings and mixed precision shared by the training stages."""
from __future__ import annotations

import os
import random

import numpy as np
import torch


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch; return a torch Generator for data order."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def pick_device(choice: str = "auto") -> torch.device:
    """'auto' uses CUDA when present; 'cuda' without a GPU is an error, not a silent fallback."""
    if choice == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("base.device is 'cuda' but no CUDA device is available")
    if choice == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda")


def set_threads(threads: int) -> None:
    if threads > 0:
        torch.set_num_threads(threads)
    elif "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, os.cpu_count() or 1))


def autocast(precision: str, device: torch.device):
    """bf16 autocast where the hardware has fast bf16 (CUDA, or CPUs with AVX512-BF16/AMX).

    'auto' picks bf16 only there; 'bf16' forces it; 'fp32' disables it. Weights,
    optimizer state and the loss stay fp32 either way.
    """
    if precision == "auto":
        fast = torch.cuda.is_bf16_supported() if device.type == "cuda" else torch.ops.mkldnn._is_mkldnn_bf16_supported()
        precision = "bf16" if fast else "fp32"
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
