"""Small synthetic datasets for fast tests (the demo renderer is tested on its own)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw


def shapes_dataset(root: Path, per_class: int = 30, size: int = 32, seed: int = 0,
                   classes=("bowl", "vase")) -> Path:
    """Ellipses vs tall rectangles on random backgrounds; returns the manifest path."""
    rng = np.random.default_rng(seed)
    rows = []
    for cls in classes:
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            img = Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(0, 120, 3)))
            draw = ImageDraw.Draw(img)
            x, y = (int(v) for v in rng.integers(2, size // 3, 2))
            colour = tuple(int(v) for v in rng.integers(140, 255, 3))
            if cls == classes[0]:
                draw.ellipse([x, y + size // 4, x + size // 2, y + size // 2], fill=colour)
            else:
                draw.rectangle([x, y, x + size // 5, y + size // 2], fill=colour)
            path = root / cls / f"{i:03d}.png"
            img.save(path)
            rows.append({"path": str(path), "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                         "class": cls, "fields": [float(x), float(y)], "factors": {"x": float(x)}})
    manifest = root / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return manifest
