"""kiln export and the one preprocessing preset.

The preset gives bit-identical tensors to what evaluate@classifier feeds the model (bnconv: the
split stage's shard; a backbone: the image store's eval view), and the exported ONNX and
TorchScript files, fed the preset's tensors, agree with the eager model on real images to
1e-4 (a classifier: bnconv and mobilenet_v2; the dcgan generator; the vae decoder)."""
from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from stages.common.errors import run_stage
from stages.common.io import md5_file
from stages.common.schema import to_dict
from stages.families._shared.gen import FieldScaler
from stages.families.autoencoder.core import ConvAutoencoder
from stages.families.autoencoder.core.config import AETrain
from stages.families.classifier.core import (
    ClassifierConfig,
    build_model,
    make_preprocess,
)
from stages.families.classifier.core.backbones import HeadConfig, TransferNet
from stages.families.classifier.core.data import (
    ShardSource,
    StoreSource,
    eval_preprocess,
)
from stages.families.classifier.core.preset import load_with_preset
from stages.families.dcgan.core import GanSet
from stages.families.dcgan.core.config import DCGANTrain
from stages.families.vae.core import BetaVAE
from stages.families.vae.core.config import VAETrain
from stages.shared.checkpoint import save_checkpoint
from stages.shared.images import load_images
from stages.shared.shards import Shard
from stages.shared.store import open_store, write_store
from stages.tools import classify, export
from tests.helpers import shapes_dataset

torch.set_num_threads(1)
CLASSES = ["bowl", "vase"]
TOLERANCE = 1e-4


# --- real inputs and tiny models -----------------------------------------------------------
@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list:
    """Shapes on noisy grounds (the demo's kind of picture), square and not, PNG (lossless)."""
    root = tmp_path_factory.mktemp("images")
    manifest = shapes_dataset(root, per_class=3, size=48, seed=1, classes=tuple(CLASSES))
    paths = [json.loads(line)["path"] for line in manifest.read_text().splitlines()]
    rng = np.random.default_rng(2)
    for i, (w, h) in enumerate([(60, 44), (37, 52)]):   # odd frames: letterbox and centre crop both cut
        path = root / f"frame{i}.png"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths


def settle_batch_norm(model: torch.nn.Module, make_batch) -> None:
    """A few training-mode passes so batch-norm statistics are not the identity init."""
    model.train()
    with torch.no_grad():
        for seed in range(3):
            model(make_batch(torch.Generator().manual_seed(seed)))
    model.eval()


@pytest.fixture(scope="module")
def bnconv(tmp_path_factory):
    cfg = ClassifierConfig(widths=[8, 16], hidden=[16], dropout=0.0, head_dropout=0.0)
    torch.manual_seed(0)
    net = build_model(cfg, len(CLASSES))
    settle_batch_norm(net, lambda g: torch.randn(4, 3, 32, 32, generator=g))
    path = tmp_path_factory.mktemp("bnconv") / "model.pt"
    save_checkpoint(path, {"family": "classifier", "model": net.state_dict(), "config": to_dict(cfg),
                           "classes": CLASSES, "epoch": 3, "image_size": 32})
    return path


@pytest.fixture(scope="module")
def mobilenet(tmp_path_factory):
    """mobilenet_v2, random init (weights: none), 64-px input, saved as train@classifier saves it."""
    cfg = ClassifierConfig(arch="mobilenet_v2", weights=None, input_size=64, head=HeadConfig(layers=0))
    torch.manual_seed(0)
    net = TransferNet("mobilenet_v2", len(CLASSES), cfg.head, 64)
    settle_batch_norm(net, lambda g: torch.randint(0, 256, (4, 3, 64, 64), generator=g, dtype=torch.uint8))
    path = tmp_path_factory.mktemp("mobilenet") / "model.pt"
    save_checkpoint(path, {"family": "classifier", "model": net.state_dict(), "config": to_dict(cfg),
                           "classes": CLASSES, "epoch": 2, "image_size": 32, "preprocess": eval_preprocess(net)})
    return path


def run(argv, capsys):
    """(exit code, stdout, stderr lines) of ``kiln export argv``."""
    code = 0
    try:
        run_stage(export.main, [str(a) for a in argv])
    except SystemExit as exit_:
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err.splitlines()


def onnx_run(path, feeds: dict) -> tuple[np.ndarray, dict]:
    import onnx
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    meta = json.loads({p.key: p.value for p in onnx.load(str(path)).metadata_props}["kiln"])
    return session.run(None, {k: v.numpy() for k, v in feeds.items()})[0], meta


def torchscript_run(path, feeds: dict) -> tuple[np.ndarray, dict]:
    extra = {"kiln.json": ""}
    module = torch.jit.load(str(path), _extra_files=extra)
    with torch.no_grad():
        return module(*feeds.values()).numpy(), json.loads(extra["kiln.json"])


RUNNERS = {"onnx": ("model.onnx", onnx_run), "torchscript": ("model.pt", torchscript_run)}


# --- one preset -----------------------------------------------------------------------------
def test_bnconv_preset_gives_the_tensors_evaluate_feeds(bnconv, images):
    """evaluate scores bnconv on the split stage's shard (load_images at image_size) through
    make_preprocess; the preset makes the same tensor from the file alone."""
    _, classes, preprocess, preset = load_with_preset(bnconv)
    assert (preset.view, preset.crop) == ("letterbox", 32)
    shard = Shard(load_images(images, 32), torch.zeros(len(images), dtype=torch.long), classes)
    (batch, _), = ShardSource(shard).eval_batches(len(images))
    fed = preprocess(batch)
    mine = preset.normalise(torch.stack([torch.from_numpy(preset.pixels(p)).permute(2, 0, 1) for p in images]))
    assert torch.equal(mine, fed)
    assert torch.equal(preset.batch([preset.pixels(p) for p in images]), fed)
    cfg = ClassifierConfig(widths=[8, 16], hidden=[16])
    assert torch.equal(make_preprocess(torch.device("cpu"), cfg)(batch), fed)


def test_backbone_preset_gives_the_tensors_evaluate_feeds(mobilenet, images, tmp_path):
    """evaluate scores a backbone on the store's test split at the preset's crop; the model
    normalises inside. The preset's pixels and normalise are the same tensors, bit for bit."""
    model, classes, preprocess, preset = load_with_preset(mobilenet)
    assert preset.record() == {"view": "centre_crop", "resize": 73, "crop": 64,
                               "mean": pytest.approx([0.485, 0.456, 0.406]), "std": pytest.approx([0.229, 0.224, 0.225])}
    write_store(tmp_path / "full", "test", images, [0] * len(images), classes,
                [f"{i:064x}" for i in range(len(images))], size=64)   # PNGs under 64 px: stored unchanged
    (views, _), = StoreSource(open_store(tmp_path / "full", "test"), preset.crop).eval_batches(len(images))
    pixels = [preset.pixels(p) for p in images]
    assert torch.equal(torch.stack([torch.from_numpy(a).permute(2, 0, 1) for a in pixels]), views)
    assert torch.equal(preset.batch(pixels), model.preprocess(preprocess(views)).contiguous())


def test_read_image_takes_a_path_bytes_or_a_file_object(mobilenet, images):
    clf = classify.load_model(mobilenet)
    path = images[-1]
    want = classify.read_image(path, clf.size, crop=clf.crop)
    data = Path(path).read_bytes()
    assert np.array_equal(classify.read_image(data, clf.size, crop=clf.crop), want)
    with open(path, "rb") as fh:
        assert np.array_equal(classify.read_image(fh, clf.size, crop=clf.crop), want)
    framed = io.BytesIO(b"HEAD" + data)
    framed.seek(4)                     # read from where the caller left the stream, not from 0
    assert np.array_equal(classify.read_image(framed, clf.size, crop=clf.crop), want)

    class Stream(io.RawIOBase):        # a socket-like body: read once, no seeking
        def __init__(self):
            self.inner = io.BytesIO(data)

        def readable(self):
            return True

        def readinto(self, buffer):
            return self.inner.readinto(buffer)

    assert np.array_equal(classify.read_image(io.BufferedReader(Stream()), clf.size, crop=clf.crop), want)
    with pytest.raises(classify.StageError, match=r"^upload\.png: refused before decoding, too many pixels"):
        classify.read_image(data, clf.size, max_pixels=100, crop=clf.crop, name="upload.png")
    with pytest.raises(classify.StageError, match=r"^image: not a readable image"):
        classify.read_image(b"<html>no</html>", clf.size)


# --- classifier parity --------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
@pytest.mark.parametrize("which", ["bnconv", "mobilenet"])
def test_classifier_export_matches_eager_on_real_images(which, fmt, request, images, tmp_path, capsys):
    checkpoint = request.getfixturevalue(which)
    name, runner = RUNNERS[fmt]
    code, out, err = run([checkpoint, "--out", tmp_path / name], capsys)
    assert code == 0 and err == [] and f"({fmt}; input image (" in out
    clf = classify.load_model(checkpoint)
    for paths in (images[:1], images):                        # batch 1 and 8: the batch is dynamic
        pixels = [clf.preset.pixels(p) for p in paths]
        uint8 = torch.from_numpy(np.stack(pixels)).permute(0, 3, 1, 2).contiguous()
        with torch.no_grad():
            eager = clf.model(clf.preprocess(uint8)).numpy()  # what kiln classify computes
        got, meta = runner(tmp_path / name, {"image": clf.preset.batch(pixels)})
        assert got.shape == eager.shape
        assert np.abs(got - eager).max() <= TOLERANCE
    assert meta["family"] == "classifier" and meta["classes"] == CLASSES and meta["format"] == fmt
    assert meta["preprocess"] == clf.preset.record() and meta["image_size"] == clf.preset.crop
    assert meta["arch"] == ("bnconv" if which == "bnconv" else "mobilenet_v2")
    assert meta["checkpoint_md5"] == md5_file(checkpoint) and meta["epoch"] in (2, 3)
    assert meta["inputs"] == {"image": ["N", 3, clf.preset.crop, clf.preset.crop]}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "a temp file was left behind"


# --- generative families ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def dcgan(tmp_path_factory):
    cfg = DCGANTrain(image_size=32, noise_dim=8, gen_width=8, disc_width=8, coarse_size=4, ema_decay=0.9)
    scaler = FieldScaler.fit(torch.randn(40, 6, generator=torch.Generator().manual_seed(0)), components=3)
    torch.manual_seed(0)
    gans = GanSet(cfg, CLASSES, scaler, 6)
    gans.start_ema()
    for net in gans.generators.values():   # BN statistics away from the init
        net.train()
        with torch.no_grad():
            net(torch.randn(8, 8), torch.randn(8, gans.cond_dim))
    gans.update_ema("all")
    path = tmp_path_factory.mktemp("dcgan") / "model.pt"
    save_checkpoint(path, {"family": "dcgan", **gans.state(), "config": to_dict(cfg), "classes": CLASSES,
                           "epoch": 1, "image_size": 32, "field_dim": 6, "field_bank": {}})
    return path, gans


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_dcgan_generator_export_matches_eager(dcgan, fmt, tmp_path, capsys):
    path, gans = dcgan
    name, runner = RUNNERS[fmt]
    code, _, err = run([path, "--out", tmp_path / name], capsys)
    assert code == 0 and err == []
    g = torch.Generator().manual_seed(3)
    labels = torch.tensor([0, 1, 1, 0, 1])
    cond = gans.cond(labels, torch.randn(5, 6, generator=g))
    noise = torch.randn(5, 8, generator=g)
    eager = gans.generate(labels, cond, noise).numpy()   # what kiln generate samples
    got, meta = runner(tmp_path / name, {"noise": noise, "cond": cond})
    assert np.abs(got - eager).max() <= TOLERANCE
    assert meta["family"] == "dcgan" and meta["ema"] is True and meta["noise_dim"] == 8
    assert meta["cond"]["one_hot"] == 2 and meta["cond"]["fields"] == 3 and meta["range"] == [-1.0, 1.0]


def test_a_per_class_dcgan_exports_the_generator_of_the_class_named(tmp_path, capsys):
    cfg = DCGANTrain(image_size=32, noise_dim=8, gen_width=8, disc_width=8, coarse_size=0, per_class=True,
                     ema_decay=0.0)
    gans = GanSet(cfg, CLASSES, FieldScaler.fit(torch.zeros(4, 0)), 0)
    save_checkpoint(tmp_path / "gan.pt", {"family": "dcgan", **gans.state(), "config": to_dict(cfg),
                                          "classes": CLASSES, "epoch": 1, "field_dim": 0})
    code, _, err = run([tmp_path / "gan.pt", "--out", tmp_path / "g.pt"], capsys)
    assert code == 1 and len(err) == 1 and "--class names the generator to export (one of bowl, vase)" in err[0]
    code, _, err = run([tmp_path / "gan.pt", "--class", "vase", "--out", tmp_path / "g.pt"], capsys)
    assert code == 0 and err == []
    noise, cond = torch.randn(3, 8), gans.cond(torch.tensor([1, 1, 1]), torch.zeros(3, 0))
    got, meta = torchscript_run(tmp_path / "g.pt", {"noise": noise, "cond": cond})
    assert meta["generator"] == "vase" and meta["cond"]["fields"] == 0
    assert np.abs(got - gans.generate(torch.tensor([1, 1, 1]), cond, noise).numpy()).max() <= TOLERANCE


@pytest.fixture(scope="module")
def vae(tmp_path_factory):
    cfg = VAETrain(image_size=32, widths=[8, 16], latent_dim=4, coarse_size=4)
    torch.manual_seed(0)
    model = BetaVAE(cfg)
    settle_batch_norm(model, lambda g: torch.rand(4, 3, 32, 32, generator=g) * 2 - 1)
    path = tmp_path_factory.mktemp("vae") / "model.pt"
    save_checkpoint(path, {"family": "vae", "model": model.state_dict(), "config": to_dict(cfg),
                           "classes": CLASSES, "epoch": 1, "image_size": 32})
    return path, model


def test_vae_decoder_exports_to_onnx_only(vae, tmp_path, capsys):
    path, model = vae
    code, _, err = run([path, "--out", tmp_path / "decoder.onnx"], capsys)
    assert code == 0 and err == []
    z = torch.randn(6, 4, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        eager = model.decode(z).numpy()
    got, meta = onnx_run(tmp_path / "decoder.onnx", {"z": z})
    assert np.abs(got - eager).max() <= TOLERANCE and meta["latent_dim"] == 4
    code, _, err = run([path, "--out", tmp_path / "decoder.pt"], capsys)
    assert code == 1 and len(err) == 1 and "ONNX only" in err[0] and not (tmp_path / "decoder.pt").exists()


# --- refusals ------------------------------------------------------------------------------------------
def test_files_that_cannot_be_exported_are_one_line(tmp_path, images, bnconv, capsys):
    jpeg = tmp_path / "model.pt"
    Image.open(images[0]).convert("RGB").save(jpeg, format="JPEG")
    cfg = AETrain(image_size=32, widths=[8, 16])
    save_checkpoint(tmp_path / "ae.pt", {"family": "autoencoder", "model": ConvAutoencoder(cfg).state_dict(),
                                         "config": to_dict(cfg), "classes": CLASSES, "epoch": 1})
    save_checkpoint(tmp_path / "junk.pt", {"model": {}, "config": {"aux_weight": 1.0}, "classes": CLASSES})
    save_checkpoint(tmp_path / "gan.pt", {"family": "dcgan", "generators": {}, "config": to_dict(DCGANTrain()),
                                          "classes": CLASSES})
    cases = [(jpeg, "out.onnx", "not a kiln checkpoint (a JPEG image"),
             (tmp_path / "missing.pt", "out.onnx", "no such checkpoint file"),
             (tmp_path / "ae.pt", "out.onnx", "autoencoder family; kiln export takes a classifier"),
             (tmp_path / "junk.pt", "out.pt", "not a classifier checkpoint"),
             (tmp_path / "gan.pt", "out.onnx", "damaged dcgan checkpoint (no 'scaler')"),
             (bnconv, "out.bin", "cannot tell the format from the suffix")]
    for model, out_name, message in cases:
        code, out, err = run([model, "--out", tmp_path / out_name], capsys)
        assert code == 1 and out == "" and len(err) == 1, err
        assert err[0].startswith("kiln: error: ") and message in err[0] and "params.yaml" not in err[0]
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(("out", "."))], "nothing half-written"
    code, _, err = run([bnconv, "--format", "torchscript", "--out", tmp_path / "out.bin"], capsys)
    assert code == 0 and zipfile.is_zipfile(tmp_path / "out.bin")        # --format overrides the suffix


def test_an_export_gets_the_mode_a_plain_file_would(bnconv, tmp_path, capsys):
    import os

    umask = os.umask(0o022)
    try:
        code, _, _ = run([bnconv, "--out", tmp_path / "model.pt"], capsys)
    finally:
        os.umask(umask)
    assert code == 0 and (tmp_path / "model.pt").stat().st_mode & 0o777 == 0o644
