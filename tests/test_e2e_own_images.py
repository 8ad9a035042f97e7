"""End to end on a user's own photos: a folder with train/ and val/ trees, classes the demo
does not know, a torchvision backbone; the real dvc.yaml in a temporary git + DVC repo."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image, ImageDraw

from tests.conftest import REPO, copy_pipeline
from tests.test_e2e import ran_stages, run

pytestmark = pytest.mark.e2e

CLASSES = ["disc", "bar"]


def draw_photo(cls: str, rng: np.random.Generator) -> Image.Image:
    """A noisy colour 'photo' of varied size and aspect with a disc or a bar on it."""
    width, height = int(rng.integers(120, 220)), int(rng.integers(90, 170))
    noise = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    tint = rng.integers(40, 200, 3)
    img = Image.fromarray(((noise.astype(np.int32) + tint) // 2).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    colour = tuple(int(c) for c in rng.integers(0, 256, 3))
    cx, cy, r = width // 2, height // 2, min(width, height) // 3
    if cls == "disc":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colour)
    else:
        draw.rectangle((cx - r, cy - r // 3, cx + r, cy + r // 3), fill=colour)
    return img


def write_photos(root: Path, per_split: dict[str, int], seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for split, count in per_split.items():
        for cls in CLASSES:
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(count):
                draw_photo(cls, rng).save(folder / f"{cls}.{i}.jpg", quality=92)


def own_images_params(folder: Path) -> dict:
    """The README's "Your own images" settings, shrunk for a test."""
    data = yaml.safe_load((REPO / "params.yaml").read_text())
    data["base"].update(classes=CLASSES, image_size=32)
    data["crawl"].update(engine="folder", folder=str(folder))
    data["filter"]["cascade"] = []
    data["families"] = ["classifier"]
    data["hpo"] = {}
    data["split"]["store_size"] = 64
    data["train"]["classifier"].update(arch="mobilenet_v3_small", weights=None, input_size=48,
                                       epochs=1, batch_size=16)
    return data


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("kiln-own")
    photos = tmp_path_factory.mktemp("photos")
    write_photos(photos, {"train": 24, "val": 10})
    copy_pipeline(root)
    (root / "params.yaml").write_text(yaml.safe_dump(own_images_params(photos), sort_keys=False))
    (root / ".gitignore").write_text("/.kiln/\n__pycache__/\n")
    for cmd in (["git", "init", "-q"], ["git", "config", "user.email", "t@kiln"], ["git", "config", "user.name", "t"],
                ["dvc", "init", "-q"], ["dvc", "config", "core.analytics", "false"], ["git", "add", "-A"],
                ["git", "commit", "-qm", "own images"]):
        run(cmd, root)
    proc = run(["dvc", "repro"], root)
    (root / "repro.log").write_text(proc.stdout + "\n" + proc.stderr)
    (root / "photos.txt").write_text(str(photos))
    return root


def test_no_demo_is_rendered_or_needed(project):
    log = (project / "repro.log").read_text()
    assert "demo" not in ran_stages(log)
    assert not (project / "data/demo").exists()
    assert "empty" not in log.lower()                 # DVC warns about empty outputs
    metrics = json.loads((project / "metrics/filter.json").read_text())
    assert "demo" not in metrics


def test_the_val_folder_is_the_val_split(project):
    photos = Path((project / "photos.txt").read_text())
    rows = [json.loads(line) for line in (project / "data/split/manifest.jsonl").read_text().splitlines()]
    given_val = {hashlib.sha256(p.read_bytes()).hexdigest() for p in photos.glob("val/*/*.jpg")}
    val = {r["sha256"] for r in rows if r["split"] == "val"}
    assert val <= given_val and len(val) >= len(given_val) - 2   # the quality checks may drop one
    assert not {r["sha256"] for r in rows if r["split"] in ("train", "test")} & given_val
    summary = json.loads((project / "data/split/summary.json").read_text())
    assert summary["splits_from"] == "given: train, val"
    assert sum(summary["counts"]["test"].values()) > 0  # carved out of train/


def test_the_backbone_trains_and_evaluates_at_its_own_size(project):
    from stages.shared.checkpoint import load_checkpoint

    checkpoint = load_checkpoint(project / "models/classifier/model.pt")
    assert checkpoint["config"]["arch"] == "mobilenet_v3_small"
    assert checkpoint["preprocess"]["crop"] == 48
    metrics = json.loads((project / "metrics/eval/classifier/metrics.json").read_text())["classifier"]
    summary = json.loads((project / "data/split/summary.json").read_text())
    assert metrics["images"] == sum(summary["counts"]["test"].values())
