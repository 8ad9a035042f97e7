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


def test_the_same_crawl_packed_twice_is_byte_identical(tmp_path):
    """data/raw's packs depend on the images alone: not on the order the blobs come in, their
    files' dates or modes, nor the clock when the crawl assembles them."""
    import hashlib
    import os

    from stages.crawl.fetch.assemble import Outcome, write_raw
    from stages.shared.packs import member_name

    blobs = []
    for k in range(30):
        data = bytes([k]) * (100 + k)
        sha = hashlib.sha256(data).hexdigest()
        blob = tmp_path / "blobs" / f"{sha}.png"
        blob.parent.mkdir(exist_ok=True)
        blob.write_bytes(data)
        blobs.append((blob, member_name("bowl" if k % 3 else "vase", sha, "png")))
    write_raw(Outcome(blobs=blobs), tmp_path / "a", ["bowl", "vase"])
    for k, (blob, _) in enumerate(blobs):    # other dates and modes, other order
        os.utime(blob, (1e9 + k, 1e9 + k))
        blob.chmod(0o600)
    write_raw(Outcome(blobs=blobs[::-1]), tmp_path / "b", ["bowl", "vase"])
    packs = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.zip"))
    assert packs and packs == sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*.zip"))
    assert all((tmp_path / "a" / p).read_bytes() == (tmp_path / "b" / p).read_bytes() for p in packs)
