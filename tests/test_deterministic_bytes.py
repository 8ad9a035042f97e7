"""Identical work gives identical bytes: torch outputs do not carry their temp file's name."""
from __future__ import annotations

import torch

from stages.shared.checkpoint import save_checkpoint
from stages.shared.shards import Shard, save_shard


def test_the_same_checkpoint_saved_twice_is_byte_identical(tmp_path):
    payload = {"model": {"w": torch.arange(12.0).reshape(3, 4)}, "config": {"lr": 0.1}, "epoch": 3}
    save_checkpoint(tmp_path / "a" / "model.pt", payload)
    save_checkpoint(tmp_path / "b" / "model.pt", payload)
    assert (tmp_path / "a/model.pt").read_bytes() == (tmp_path / "b/model.pt").read_bytes()


def test_the_same_shard_saved_twice_is_byte_identical(tmp_path):
    shard = Shard(images=torch.randint(0, 255, (4, 3, 8, 8), dtype=torch.uint8), labels=torch.tensor([0, 1, 0, 1]),
                  fields=torch.zeros(4, 0), classes=["a", "b"], sha256=["0" * 64] * 4, paths=[f"p{i}" for i in range(4)])
    save_shard(tmp_path / "one.pt", shard)
    save_shard(tmp_path / "two.pt", shard)
    assert (tmp_path / "one.pt").read_bytes() == (tmp_path / "two.pt").read_bytes()
