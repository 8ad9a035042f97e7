"""kiln classify: labelled folders (accuracy, per-class table, JSONL), bad files that do not stop
the rest, pixel bombs refused unread, and --model files that are not classifier checkpoints."""
from __future__ import annotations

import json
import re
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from stages.common.errors import run_stage
from stages.common.schema import to_dict
from stages.families.classifier.core import (
    ClassifierConfig,
    build_model,
    load_classifier,
)
from stages.families.classifier.core import preset as preset_module
from stages.families.dcgan.core.config import DCGANTrain
from stages.shared.checkpoint import save_checkpoint
from stages.shared.images import load_rgb
from stages.shared.nets import to_float
from stages.tools import classify as tool

torch.set_num_threads(1)
CLASSES = ["vase", "bowl", "cup"]      # training order, deliberately not sorted


COLOURS = {"vase": (200, 40, 40), "bowl": (40, 200, 40), "cup": (40, 40, 200)}


def colour_image(colour, seed, size=(40, 30)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    pixels = np.array(colour) + rng.integers(-40, 40, (size[1], size[0], 3))
    return np.clip(pixels, 0, 255).astype(np.uint8)


def save_image(path, seed, size=(40, 30), colour=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    colour = colour or tuple(np.random.default_rng(seed).integers(0, 255, 3))
    Image.fromarray(colour_image(colour, seed, size)).save(path)
    return path


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A tiny bnconv classifier taught (in about a second) that the class is the dominant colour."""
    cfg = ClassifierConfig(widths=[4, 8], hidden=[8], dropout=0.0, head_dropout=0.0)
    torch.manual_seed(0)
    net = build_model(cfg, len(CLASSES))
    images = torch.from_numpy(np.stack([colour_image(COLOURS[c], 100 + i, (32, 32))
                                        for i in range(8) for c in CLASSES])).permute(0, 3, 1, 2)
    labels = torch.arange(len(CLASSES)).repeat(8)
    optimizer = torch.optim.Adam(net.parameters(), lr=0.02)
    net.train()
    for _ in range(40):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(net(to_float(images)), labels).backward()
        optimizer.step()
    path = tmp_path_factory.mktemp("model") / "model.pt"
    save_checkpoint(path, {"family": "classifier", "model": net.state_dict(), "config": to_dict(cfg),
                           "classes": CLASSES, "epoch": 1, "image_size": 32})
    return path


def labelled_folder(root, counts=(3, 2, 4)):
    """counts images per class, each the colour of its class except one bowl that is a cup's
    colour (so the model gets it wrong), at two sizes (letterboxed), as jpg and png."""
    files = []
    for k, (c, n) in enumerate(zip(CLASSES, counts)):
        for i in range(n):
            size = (40, 30) if i % 2 else (24, 36)
            colour = COLOURS["cup" if (c, i) == ("bowl", 1) else c]
            files.append(save_image(root / c / f"{c}{i}.{'png' if i % 2 else 'jpg'}", 10 * k + i, size, colour))
    (root / "vase" / "notes.txt").write_text("not an image, not scored")
    return files


def png_header(width, height) -> bytes:
    """A PNG whose header claims width x height; its pixel data is never there to decode."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def run(argv, capsys):
    """(exit code, stdout, stderr lines) of ``kiln classify argv``."""
    code = 0
    try:
        run_stage(tool.main, [str(a) for a in argv])
    except SystemExit as exit_:
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err.splitlines()


def table(out):
    """{class: {column: value}} from the printed per-class table."""
    lines = out.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("class "))
    columns = lines[head].split()[1:]
    rows = {}
    for line in lines[head + 1: head + 1 + len(CLASSES)]:
        name, *cells = line.split()
        rows[name] = {k: (None if v == "-" else float(v)) for k, v in zip(columns, cells)}
    return rows


# --- labelled folder -----------------------------------------------------------------
def test_labelled_folder_prints_accuracy_and_per_class_and_writes_jsonl(tmp_path, model, capsys):
    files = labelled_folder(tmp_path / "data")
    out_file = tmp_path / "out" / "predictions.jsonl"
    code, out, err = run([tmp_path / "data", "--model", model, "--out", out_file, "--topk", "2"], capsys)
    assert code == 0 and err == []
    rows = [json.loads(line) for line in out_file.read_text().splitlines()]
    assert sorted(r["path"] for r in rows) == sorted(map(str, files))    # notes.txt is not an image
    for r in rows:
        assert set(r) == {"path", "class", "predicted", "correct", "topk"}
        assert r["class"] == r["path"].split("/")[-2]
        assert r["topk"][0]["label"] == r["predicted"] and len(r["topk"]) == 2
        assert r["topk"][0]["probability"] >= r["topk"][1]["probability"]
        assert r["correct"] == (r["predicted"] == r["class"])

    # accuracy and per-class figures, recomputed from the JSONL alone
    right = sum(r["predicted"] == r["class"] for r in rows)
    assert 0 < right < len(rows) and len({r["predicted"] for r in rows}) == len(CLASSES), "a degenerate model"
    accuracy = re.search(r"accuracy (\S+) \((\d+)/(\d+) images\)", out)
    assert float(accuracy.group(1)) == pytest.approx(right / len(rows), abs=5e-4)
    assert (int(accuracy.group(2)), int(accuracy.group(3))) == (right, len(rows))
    per_class = table(out)
    assert list(per_class) == CLASSES
    for c, got in per_class.items():
        true = [r for r in rows if r["class"] == c]
        said = [r for r in rows if r["predicted"] == c]
        hits = sum(r["predicted"] == c for r in true)
        assert (got["images"], got["predicted"], got["correct"]) == (len(true), len(said), hits)
        assert got["recall"] == pytest.approx(hits / len(true), abs=5e-4)
        assert got["precision"] == (pytest.approx(hits / len(said), abs=5e-4) if said else None)

    # the probabilities are the model's on evaluate's decode (load_rgb at the checkpoint's size)
    net, classes, preprocess = load_classifier(model)
    first = rows[0]
    with torch.no_grad():
        image = torch.from_numpy(load_rgb(first["path"], 32)).permute(2, 0, 1)[None]
        probs = torch.softmax(net(preprocess(image)), 1)[0]
    assert first["topk"][0]["probability"] == pytest.approx(float(probs.max()), abs=1e-5)
    assert first["predicted"] == classes[int(probs.argmax())]


def test_plain_files_print_predictions_as_before(tmp_path, model, capsys):
    files = [save_image(tmp_path / "a.png", 1), save_image(tmp_path / "b.jpg", 2)]
    code, out, err = run([*files, "--model", model], capsys)
    assert code == 0 and err == []
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line["path"] for line in lines] == list(map(str, files))
    for line in lines:
        assert line["success"] is True and len(line["predictions"]) == 3
        assert sorted(p["label"] for p in line["predictions"]) == sorted(CLASSES)


def test_a_folder_not_named_after_a_class_is_an_error_naming_it(tmp_path, model, capsys):
    labelled_folder(tmp_path / "data")
    save_image(tmp_path / "data" / "vases" / "x.png", 5)
    out_file = tmp_path / "predictions.jsonl"
    code, out, err = run([tmp_path / "data", "--model", model, "--out", out_file], capsys)
    assert code == 2 and out == "" and not out_file.exists()
    assert len(err) == 1 and str(tmp_path / "data" / "vases") in err[0] and "vase, bowl, cup" in err[0]


# --- bad files ---------------------------------------------------------------------
def test_a_corrupt_file_is_named_once_and_the_rest_still_scored(tmp_path, model, capsys):
    files = labelled_folder(tmp_path / "data")
    (tmp_path / "data" / "bowl" / "garbage.jpg").write_bytes(b"<html>not an image</html>")
    truncated = tmp_path / "data" / "cup" / "truncated.jpg"
    save_image(truncated, 9, (64, 64))
    truncated.write_bytes(truncated.read_bytes()[:len(truncated.read_bytes()) // 2])          # header intact, pixel data cut
    out_file = tmp_path / "predictions.jsonl"
    code, out, err = run([tmp_path / "data", "--model", model, "--out", out_file], capsys)
    assert code == 1
    rows = [json.loads(line) for line in out_file.read_text().splitlines()]
    assert sorted(r["path"] for r in rows) == sorted(map(str, files))
    assert f"({sum(r['correct'] for r in rows)}/{len(files)} images)" in out
    for bad in ("garbage.jpg", "truncated.jpg"):
        named = [line for line in err if bad in line]
        assert len(named) == 1 and named[0].startswith("kiln: error: ") and "not a readable image" in named[0]
    assert not any("Traceback" in line for line in err)


def test_pixel_bombs_are_refused_from_the_header_without_decoding(tmp_path, model, capsys, monkeypatch):
    files = labelled_folder(tmp_path / "data", counts=(1, 1, 1))
    huge = tmp_path / "data" / "vase" / "huge.png"            # over Pillow's own limit too
    huge.write_bytes(png_header(30000, 30000))
    big = tmp_path / "data" / "bowl" / "big.png"              # over the 40M default, under Pillow's
    big.write_bytes(png_header(7000, 7000))
    decoded = []
    monkeypatch.setattr(preset_module, "load_rgb", lambda path, size: decoded.append(str(path)) or load_rgb(path, size))
    out_file = tmp_path / "predictions.jsonl"
    code, out, err = run([tmp_path / "data", "--model", model, "--out", out_file], capsys)
    assert code == 1
    assert sorted(decoded) == sorted(map(str, files))        # the bombs never reached the decoder
    assert len(out_file.read_text().splitlines()) == len(files)
    for bomb in (huge, big):
        named = [line for line in err if str(bomb) in line]
        assert len(named) == 1 and "refused before decoding, too many pixels" in named[0]
    assert f"the header claims over {2 * Image.MAX_IMAGE_PIXELS} > --max-pixels 40000000" in " ".join(err)
    assert "7000x7000 > --max-pixels 40000000" in " ".join(err)
    assert not any("Traceback" in line for line in err)

    # --max-pixels is the cap: a 40x30 image is refused under 1000
    small = save_image(tmp_path / "small.png", 3, (40, 30))
    code, out, err = run([small, "--model", model, "--max-pixels", "1000"], capsys)
    assert code == 1 and out == ""
    assert [line for line in err if "small.png" in line] == [
        f"kiln: error: {small}: refused before decoding, too many pixels (40x30 > --max-pixels 1000)"]


# --- --model that is not a classifier ------------------------------------------------
@pytest.mark.parametrize("content", ["jpeg", "random"])
def test_a_model_that_is_not_a_checkpoint_is_one_line(tmp_path, model, capsys, content):
    image = save_image(tmp_path / "a.png", 1)
    fake = tmp_path / "model.jpg"
    if content == "jpeg":
        save_image(fake, 2)
        Image.open(fake).convert("RGB").save(fake, format="JPEG")
    else:
        fake.write_bytes(np.random.default_rng(0).bytes(4096))
    code, out, err = run([image, "--model", fake], capsys)
    assert code == 1 and out == ""
    assert len(err) == 1 and err[0].startswith(f"kiln: error: {fake}: not a kiln checkpoint")
    if content == "jpeg":
        assert "a JPEG image" in err[0]


def test_a_checkpoint_of_another_family_names_the_family(tmp_path, capsys):
    image = save_image(tmp_path / "a.png", 1)
    dcgan = {"generator": {"w": torch.zeros(2)}, "discriminator": {"w": torch.zeros(2)},
             "config": to_dict(DCGANTrain()), "classes": ["pot"], "epoch": 1, "image_size": 32}
    save_checkpoint(tmp_path / "dcgan.pt", {"family": "dcgan", **dcgan})
    code, out, err = run([image, "--model", tmp_path / "dcgan.pt"], capsys)
    assert code == 1 and out == "" and len(err) == 1
    assert "a dcgan checkpoint" in err[0] and "needs a classifier" in err[0]
    assert "params.yaml" not in err[0] and "unknown key" not in err[0]

    # no "family" key (an older checkpoint): still one line, not a params.yaml message
    save_checkpoint(tmp_path / "old.pt", {**dcgan, "model": dcgan["generator"]})
    code, out, err = run([image, "--model", tmp_path / "old.pt"], capsys)
    assert code == 1 and len(err) == 1
    assert "not a classifier checkpoint" in err[0] and "params.yaml" not in err[0]


def test_plain_files_continue_past_bad_ones_with_one_line_each(tmp_path, model, capsys):
    """The issue's case: one unreadable file among good ones no longer aborts the batch."""
    good = [save_image(tmp_path / "a.png", 1), save_image(tmp_path / "c.jpg", 3)]
    garbage = tmp_path / "b.png"
    garbage.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    huge = tmp_path / "huge.png"
    huge.write_bytes(png_header(30000, 30000))
    missing = tmp_path / "gone.png"
    code, out, err = run([good[0], garbage, huge, missing, good[1], "--model", model], capsys)
    assert code == 1
    assert [json.loads(line)["path"] for line in out.splitlines()] == list(map(str, good))
    for bad, why in ((garbage, "not a readable image"), (huge, "refused before decoding, too many pixels"),
                     (missing, "no such image file")):
        assert [line for line in err if str(bad) in line] == [line for line in err if why in line]
        assert len([line for line in err if str(bad) in line]) == 1
    assert err[-1] == "kiln: error: 3 of 5 file(s) could not be classified (named above)"
    assert not any("Traceback" in line for line in err)


@pytest.mark.parametrize("view", ["letterbox", "centre_crop"])
def test_a_pack_member_decodes_like_the_loose_file(tmp_path, view):
    """A manifest's path (data/raw/<class>/<xx>.zip/<sha256>.png) classifies like the file it packs."""
    import io as bytes_io

    from stages.common.errors import StageError
    from stages.shared.packs import packed_path, write_packs
    rng = np.random.default_rng(3)
    picture = Image.fromarray(rng.integers(0, 256, size=(40, 56, 3), dtype=np.uint8))
    buffer = bytes_io.BytesIO()
    picture.save(buffer, format="PNG")
    loose = tmp_path / "loose.png"
    loose.write_bytes(buffer.getvalue())
    sha = "ab" + "0" * 62
    write_packs(tmp_path / "raw", [(f"bowl/ab.zip/{sha}.png", buffer.getvalue())])
    member = packed_path(tmp_path / "raw", "bowl", sha, "png")
    np.testing.assert_array_equal(preset_module.decode_view(member, view, 32),
                                  preset_module.decode_view(str(loose), view, 32))
    with pytest.raises(StageError, match="no such image file"):
        preset_module.decode_view(member.replace(sha, "cd" + "0" * 62), view, 32)
