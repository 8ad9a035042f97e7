"""The model behind the server: eager PyTorch (a kiln checkpoint) or onnxruntime (a ``kiln
export`` .onnx file). Both take the images ``classify.read_image`` prepared, uint8
(B, S, S, 3), and answer softmax probabilities (B, C) in the training order of the classes,
so the server prepares every image exactly as ``kiln classify`` and evaluate do.
"""
from __future__ import annotations

import atexit
import io
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from stages.common.errors import StageError
from stages.common.io import md5_file
from stages.families.classifier.core.preset import Preset, eval_view_preset, letterbox_preset
from stages.shared.checkpoint import load_checkpoint
from stages.tools.classify import load_model
from stages.tools.export import export

VIEWS = {"letterbox": "the whole image fitted into S x S (longer side shrunk to 'resize'), padded with its "
                      "border's median colour; then (x / 255 - mean) / std",
         "centre_crop": "EXIF orientation applied, shorter side resized to 'resize', centre crop 'crop'; "
                        "then (x / 255 - mean) / std"}


def describe(preset: Preset) -> dict:
    """The preset for /metadata: its record (as kiln export writes it) and what it means."""
    return {**preset.record(), "means": VIEWS[preset.view]}


class TorchBackend:
    name = "torch"

    def __init__(self, path: Path, device: str = "cpu"):
        self.clf = load_model(path, device)        # one-line StageError for a wrong file
        checkpoint = load_checkpoint(path)
        self.classes, self.preset = self.clf.classes, self.clf.preset
        self.info = {
            "backend": self.name, "family": checkpoint.get("family", "classifier"), "classes": self.classes,
            "arch": checkpoint["config"].get("arch", "bnconv"), "image_size": checkpoint.get("image_size"),
            "input_size": self.preset.crop, "preprocess": describe(self.preset),
            "checkpoint": {"path": str(path), "md5": md5_file(path), "epoch": checkpoint.get("epoch"),
                           "val_accuracy": checkpoint.get("val_accuracy"), "val_loss": checkpoint.get("val_loss")},
        }

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        batch = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
        return self.clf.probabilities(batch).numpy()

    def cam_png(self, image: np.ndarray, min_side: int = 224) -> tuple[int, bytes]:
        """Grad-CAM of the predicted class over one prepared image (S, S, 3): (class index, PNG)."""
        from PIL import Image
        from stages.shared.cam import grad_cam, overlay      # matplotlib: only when asked
        batch = torch.from_numpy(image).permute(2, 0, 1)[None].contiguous()
        x = self.clf.preprocess(batch.to(self.clf.device))
        heat = grad_cam(self.clf.model, x)
        with torch.no_grad():
            predicted = int(self.clf.model(x).argmax(1)[0])
        picture = Image.fromarray(overlay(batch, heat)[0].permute(1, 2, 0).numpy())
        if picture.width < min_side:                        # a 64-px view is too small to look at
            picture = picture.resize((min_side, min_side), Image.Resampling.NEAREST)
        buf = io.BytesIO()
        picture.save(buf, format="PNG")
        return predicted, buf.getvalue()


class OnnxBackend:
    """An ONNX file from ``kiln export``: input ``image`` (float32 N x 3 x S x S, normalised),
    output ``logits``, metadata_props ``kiln`` = JSON (family, classes, arch, preprocess, image_size...)."""
    name = "onnx"

    def __init__(self, path: Path, threads: int):
        import onnxruntime as ort
        if not path.is_file():
            raise StageError(f"{path}: no such ONNX file (kiln export writes one)")
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")   # as OMP_WAIT_POLICY
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as err:   # onnxruntime raises its own exception types for a bad file
            raise StageError(f"{path}: not a readable ONNX model ({str(err).splitlines()[0][:160]}); "
                             "--backend onnx takes the .onnx file kiln export writes") from None
        meta = self._kiln_metadata(path)
        self.classes = list(meta["classes"])
        self.preset = preset_from_record(meta.get("preprocess"), path)
        self.mean = np.asarray(self.preset.mean, np.float32).reshape(1, 3, 1, 1)
        self.std = np.asarray(self.preset.std, np.float32).reshape(1, 3, 1, 1)
        self.info = {"backend": self.name, "family": "classifier", "classes": self.classes,
                     "arch": meta.get("arch"), "image_size": meta.get("image_size"),
                     "input_size": self.preset.crop, "preprocess": describe(self.preset),
                     "checkpoint": {"path": meta.get("checkpoint"), "md5": meta.get("checkpoint_md5"),
                                    "epoch": meta.get("epoch"), "val_accuracy": meta.get("val_accuracy"),
                                    "val_loss": meta.get("val_loss")},
                     "export": {"path": str(path), "md5": md5_file(path), "metadata": meta}}

    def _kiln_metadata(self, path: Path) -> dict:
        props = self.session.get_modelmeta().custom_metadata_map
        try:
            meta = json.loads(props["kiln"])
        except (KeyError, ValueError):
            raise StageError(f"{path}: an ONNX model without kiln's metadata ('kiln' in metadata_props); "
                             "--backend onnx takes a file written by kiln export") from None
        if meta.get("family", "classifier") != "classifier" or not meta.get("classes"):
            raise StageError(f"{path}: a {meta.get('family')} export; kiln serve needs a classifier's")
        names = ([i.name for i in self.session.get_inputs()], [o.name for o in self.session.get_outputs()])
        if "image" not in names[0] or "logits" not in names[1]:
            raise StageError(f"{path}: inputs {names[0]} / outputs {names[1]}; kiln export's classifier "
                             "has input 'image' and output 'logits'")
        return meta

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        x = images.transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255)
        logits = self.session.run(["logits"], {"image": (x - self.mean) / self.std})[0]
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        return shifted / shifted.sum(axis=1, keepdims=True)


def preset_from_record(record, path: Path) -> Preset:
    """The Preset an export's metadata records (``Preset.record()``); anything else is refused."""
    try:
        view, crop, resize = record["view"], int(record["crop"]), int(record["resize"])
        mean, std = [tuple(float(v) for v in record[k]) for k in ("mean", "std")]
        if len(mean) != 3 or len(std) != 3 or crop < 1:
            raise ValueError
    except (KeyError, TypeError, ValueError):
        raise StageError(f"{path}: the export's 'preprocess' record {record!r} is not one kiln export "
                         "writes (view, resize, crop, mean, std)") from None
    if view == "letterbox":
        return letterbox_preset(crop, mean, std)
    if view == "centre_crop":
        preset = eval_view_preset(crop, mean, std)
        if preset.resize == resize:
            return preset
    raise StageError(f"{path}: unsupported preprocessing in the export: view {view!r}, resize {resize}, crop {crop}")


def load_backend(kind: str, path: Path, device: str, threads: int):
    if kind == "onnx":
        return OnnxBackend(exported(path), threads)
    return TorchBackend(path, device)


def exported(path: Path) -> Path:
    """``path`` if it is an ONNX file; a kiln checkpoint (a zip: torch.save's format) is
    exported once to a temporary .onnx first, so ``--backend onnx --model model.pt`` works."""
    with open(path, "rb") if path.is_file() else io.BytesIO() as fh:
        if fh.read(4) != b"PK\x03\x04":
            return path
    folder = Path(tempfile.mkdtemp(prefix="kiln-serve-onnx-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    out = folder / f"{path.stem}.onnx"
    export(path, out, "onnx")
    print(f"serve: exported {path} to ONNX for --backend onnx", flush=True)
    return out
