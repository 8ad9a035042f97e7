"""Export a trained model to ONNX or TorchScript: kiln export MODEL.pt --out FILE.onnx|FILE.pt

    kiln export models/classifier/model.pt --out exports/classifier.onnx
    kiln export models/classifier/model.pt --out exports/classifier.pt     # TorchScript
    kiln export models/dcgan/model.pt --out exports/generator.onnx [--class vase]
    kiln export models/vae/model.pt --out exports/decoder.onnx

The format follows the suffix (``.onnx``; ``.pt``/``.ts``: TorchScript) unless ``--format``
says. What is exported, with a dynamic batch dimension N:

* classifier: input ``image`` float32 (N, 3, S, S), already prepared by the checkpoint's
  preset (core/preset.py: letterbox or eval view, then (x / 255 - mean) / std), output
  ``logits`` (N, classes); softmax is left to the caller.
* dcgan: the (EMA) generator: inputs ``noise`` (N, noise_dim) ~ N(0, 1) and ``cond``
  (N, cond_dim) = [one-hot class, whitened field components, 0 = the average shape], output
  ``image`` (N, 3, S, S) in [-1, 1]. ``per_class: true`` checkpoints export one class's.
* vae: the decoder, ONNX only: input ``z`` (N, latent_dim) ~ N(0, 1), output ``image`` in [-1, 1].

Metadata (ONNX ``metadata_props["kiln"]``, TorchScript extra file ``kiln.json``): JSON with
``family``, ``classes``, ``arch``, ``preprocess`` ({view, resize, crop, mean, std}),
``image_size``, ``inputs``, ``outputs``, ``checkpoint``, ``checkpoint_md5``, ``epoch``, ...
ONNX goes through torch.export and onnxscript (``dynamo=True``; the TorchScript-based ONNX
exporter is deprecated since torch 2.9). TorchScript uses ``torch.jit.script``, not
``trace``: a trace bakes ``len(x)`` (used by the generative nets' reshapes) into a constant
batch size. Files are written atomically; a file that is not a kiln checkpoint, or one of a
family with nothing to export, is one ``kiln: error:`` line.
"""
from __future__ import annotations

import argparse
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from stages.common.errors import StageError, run_stage
from stages.common.io import atomic_path, md5_file
from stages.common.schema import ParamsError, from_dict
from stages.families._shared.gen import FieldScaler
from stages.families.classifier.core.backbones import TransferNet
from stages.families.classifier.core.preset import classifier_from_checkpoint
from stages.families.dcgan.core import GanSet
from stages.families.dcgan.core.config import DCGANTrain
from stages.families.vae.core import BetaVAE
from stages.families.vae.core.config import VAETrain
from stages.shared.checkpoint import load_checkpoint
from stages.tools.classify import describe_file, read_classifier_checkpoint

FORMATS = {".onnx": "onnx", ".pt": "torchscript", ".ts": "torchscript", ".torchscript": "torchscript"}
EXPORT_VERSION = 1        # bump when the metadata's meaning changes
OPSET = 18                # the dynamo exporter's default: onnxruntime >= 1.14 runs it


@dataclass
class Exportable:
    module: nn.Module                   # eval mode, float32 inputs
    example: tuple[torch.Tensor, ...]   # example inputs, batch 2
    inputs: list[str]
    outputs: list[str]
    meta: dict


# --- what each family exports ---------------------------------------------------------
class LayersAfterPreprocess(nn.Module):
    """A TransferNet's trunk and head: the export takes the normalised image its preprocess makes."""

    def __init__(self, net: TransferNet):
        super().__init__()
        self.backbone, self.head = net.backbone, net.head

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(image))


def classifier_exportable(checkpoint: dict, path: Path) -> Exportable:
    model, classes, _, preset = classifier_from_checkpoint(checkpoint, path)
    model = model.to(memory_format=torch.contiguous_format)
    if isinstance(model, TransferNet):
        if preset.crop != model.input_size:
            raise StageError(f"{path}: a {model.arch} checkpoint without a 'preprocess' record (older kiln): its "
                             f"input ({preset.crop} px, resized inside) cannot be exported; retrain it")
        model = LayersAfterPreprocess(model)
    side = preset.crop
    meta = {"family": "classifier", "classes": classes, "arch": checkpoint["config"].get("arch", "bnconv"),
            "preprocess": preset.record(), "image_size": side,
            "inputs": {"image": ["N", 3, side, side]}, "outputs": {"logits": ["N", len(classes)]},
            "epoch": checkpoint.get("epoch"), "val_accuracy": checkpoint.get("val_accuracy")}
    return Exportable(model.eval(), (torch.zeros(2, 3, side, side),), ["image"], ["logits"], meta)


def dcgan_exportable(checkpoint: dict, path: Path, class_name: str | None) -> Exportable:
    cfg = stored_config(DCGANTrain, checkpoint, path)
    gans = GanSet(cfg, checkpoint["classes"], FieldScaler.from_state(checkpoint["scaler"]), checkpoint["field_dim"])
    gans.load(checkpoint)
    key = "all"
    if cfg.per_class:
        if class_name not in gans.classes:
            raise StageError(f"{path}: a per-class dcgan: --class names the generator to export "
                             f"(one of {', '.join(gans.classes)})")
        key = class_name
    generator = (gans.ema or gans.generators)[key].eval()
    z, c = cfg.noise_dim, gans.cond_dim
    meta = {"family": "dcgan", "classes": gans.classes, "arch": "dcgan-generator", "image_size": cfg.image_size,
            "generator": key, "ema": bool(gans.ema), "noise_dim": z,
            "cond": {"one_hot": len(gans.classes), "fields": c - len(gans.classes),
                     "field_scaler": gans.scaler.state()},
            "inputs": {"noise": ["N", z], "cond": ["N", c]},
            "outputs": {"image": ["N", 3, cfg.image_size, cfg.image_size]}, "range": [-1.0, 1.0],
            "epoch": checkpoint.get("epoch")}
    return Exportable(generator, (torch.zeros(2, z), torch.zeros(2, c)), ["noise", "cond"], ["image"], meta)


class Decoder(nn.Module):
    def __init__(self, vae: nn.Module):
        super().__init__()
        self.vae = vae

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(z)


def vae_exportable(checkpoint: dict, path: Path) -> Exportable:
    cfg = stored_config(VAETrain, checkpoint, path)
    vae = BetaVAE(cfg)
    vae.load_state_dict(checkpoint["model"])
    side = cfg.image_size
    meta = {"family": "vae", "classes": list(checkpoint.get("classes", [])), "arch": "vae-decoder",
            "image_size": side, "latent_dim": cfg.latent_dim, "inputs": {"z": ["N", cfg.latent_dim]},
            "outputs": {"image": ["N", 3, side, side]}, "range": [-1.0, 1.0], "epoch": checkpoint.get("epoch")}
    return Exportable(Decoder(vae).eval(), (torch.zeros(2, cfg.latent_dim),), ["z"], ["image"], meta)


def stored_config(config_cls, checkpoint: dict, path: Path):
    """The training config a generative checkpoint holds (a key saved before it existed: as trained)."""
    stored = {**getattr(config_cls, "CHECKPOINT_LEGACY", {}), **checkpoint["config"]}
    try:
        return from_dict(config_cls, stored, "config")
    except ParamsError as err:   # the checkpoint's problem, not params.yaml's
        raise StageError(f"{path}: damaged {checkpoint.get('family')} checkpoint ({err.path}: {err.message})") from None


# --- reading the checkpoint -------------------------------------------------------------
EXPORTERS = {"classifier", "dcgan", "vae"}


def read_exportable(path: Path, class_name: str | None) -> Exportable:
    """The checkpoint's Exportable, or a one-line StageError naming what the file is instead."""
    if not path.is_file():
        raise StageError(f"{path}: no such checkpoint file")
    try:
        checkpoint = load_checkpoint(path)
    except ValueError as err:
        cause = err.__cause__.__class__.__name__ if err.__cause__ else "ValueError"
        raise StageError(f"{path}: not a kiln checkpoint ({describe_file(path)}; torch.load: {cause}); "
                         "kiln export takes a models/<family>/model.pt") from None
    family = checkpoint.get("family") if isinstance(checkpoint, dict) else None
    if family not in (None, *EXPORTERS):
        raise StageError(f"{path}: a checkpoint of the {family} family; kiln export takes a classifier, "
                         "dcgan (generator) or vae (decoder) checkpoint")
    if family not in (None, "classifier"):
        missing = [k for k in ("config", "generators" if family == "dcgan" else "model") if k not in checkpoint]
        if missing:
            raise StageError(f"{path}: damaged {family} checkpoint (no {', '.join(missing)})")
    try:
        if family == "dcgan":
            return dcgan_exportable(checkpoint, path, class_name)
        if family == "vae":
            return vae_exportable(checkpoint, path)
        # older classifiers carry no "family": classify's checks say what the file is instead
        return classifier_exportable(read_classifier_checkpoint(path, "kiln export"), path)
    except StageError:
        raise
    except KeyError as err:                    # a key the family's loader needs
        raise StageError(f"{path}: damaged {family or 'classifier'} checkpoint (no {err.args[0]!r})") from None
    except RuntimeError as err:                # weights that do not fit the stored config
        raise StageError(f"{path}: damaged {family or 'classifier'} checkpoint "
                         f"({str(err).strip().splitlines()[0]})") from None


# --- writing ------------------------------------------------------------------------------
def exported_program(ex: Exportable):
    """torch.export's graph with a dynamic batch. Non-strict first (torch's default); the
    generative nets' ``len(x)`` forces an int there and pins the batch, which strict mode
    (TorchDynamo) keeps symbolic. torch.onnx.export, given the module, would instead fall
    back silently to a draft export fixed at the example's batch of 2."""
    from torch._dynamo.exc import UserError

    batch = torch.export.Dim("batch", min=1, max=65536)
    dynamic = tuple({0: batch} for _ in ex.example)
    try:
        return torch.export.export(ex.module, ex.example, dynamic_shapes=dynamic, strict=False)
    except UserError:   # "constraints violated": the batch was specialised
        return torch.export.export(ex.module, ex.example, dynamic_shapes=dynamic, strict=True)


def write_onnx(ex: Exportable, out: Path, metadata: str, opset: int = OPSET) -> None:
    """torch.export -> ONNX (onnxscript), batch dimension dynamic, metadata_props["kiln"]."""
    import onnx  # heavy: only this command needs it

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # torch.export's notes on the traced graph: not the user's concern
        try:
            program = torch.onnx.export(exported_program(ex), input_names=ex.inputs, output_names=ex.outputs,
                                        dynamo=True, opset_version=opset, verbose=False, optimize=True)
        except Exception as err:  # noqa: BLE001 (export and translation raise many types: one line)
            first = str(err).strip().splitlines()[0] if str(err).strip() else ""
            raise StageError(f"{ex.meta['family']} {ex.meta['arch']}: ONNX export failed "
                             f"({err.__class__.__name__}: {first})") from None
    proto = program.model_proto
    fixed = [i.name for i in proto.graph.input if not i.type.tensor_type.shape.dim[0].dim_param]
    if fixed:   # never ship a model that only runs at batch 2
        raise StageError(f"{ex.meta['family']} {ex.meta['arch']}: the ONNX export fixed the batch size of {fixed}")
    onnx.helper.set_model_props(proto, {"kiln": metadata})
    with atomic_path(out) as tmp:
        onnx.save(proto, str(tmp))
        shareable(tmp)


def write_torchscript(ex: Exportable, out: Path, metadata: str) -> None:
    """torch.jit.script (a trace would fix len(x) to the example's batch), kiln.json alongside."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)   # TorchScript is deprecated, still supported
        warnings.simplefilter("ignore", FutureWarning)
        try:
            scripted = torch.jit.script(ex.module)
        except Exception as err:  # noqa: BLE001 (the compiler raises many types; say which model, in one line)
            raise StageError(f"{ex.meta['family']} {ex.meta['arch']}: TorchScript cannot compile it "
                             f"({err.__class__.__name__}); export to .onnx instead") from None
        with atomic_path(out) as tmp:
            torch.jit.save(scripted, str(tmp), _extra_files={"kiln.json": metadata})
            shareable(tmp)


def shareable(path: Path) -> None:
    """The mode a plain open() would give (0666 less the umask): atomic_path's temp file is
    0600, and an export is made to be handed to another user or a serving container."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def export(checkpoint: Path, out: Path, fmt: str, class_name: str | None = None, opset: int = OPSET) -> dict:
    """Write ``checkpoint``'s model to ``out`` in ``fmt``; returns the metadata written."""
    ex = read_exportable(checkpoint, class_name)
    if fmt == "torchscript" and ex.meta["family"] == "vae":
        raise StageError(f"{checkpoint}: the vae decoder exports to ONNX only (TorchScript cannot compile "
                         "its decode); use --out FILE.onnx")
    meta = {"kiln_export": EXPORT_VERSION, **ex.meta, "format": fmt, "checkpoint": str(checkpoint),
            "checkpoint_md5": md5_file(checkpoint), "torch": torch.__version__}
    text = json.dumps(meta, sort_keys=True)
    with torch.no_grad():
        if fmt == "onnx":
            write_onnx(ex, out, text, opset)
        else:
            write_torchscript(ex, out, text)
    return meta


def output_format(out: Path, given: str | None) -> str:
    if given:
        return given
    if out.suffix.lower() not in FORMATS:
        raise StageError(f"{out}: cannot tell the format from the suffix; name it .onnx or .pt, or give --format")
    return FORMATS[out.suffix.lower()]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="kiln export", description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, nargs="?", default=Path("models/classifier/model.pt"),
                        help="a kiln checkpoint (default: models/classifier/model.pt)")
    parser.add_argument("--out", type=Path, required=True, help="the file to write (.onnx, or .pt for TorchScript)")
    parser.add_argument("--format", choices=sorted(set(FORMATS.values())), help="default: from the --out suffix")
    parser.add_argument("--class", dest="class_name", help="a per-class dcgan: the class whose generator to export")
    parser.add_argument("--opset", type=int, default=OPSET, help=f"ONNX opset (default {OPSET})")
    args = parser.parse_args(argv)
    fmt = output_format(args.out, args.format)
    meta = export(args.model, args.out, fmt, args.class_name, args.opset)
    inputs = ", ".join(f"{k} {tuple(v)}" for k, v in meta["inputs"].items())
    print(f"export: {args.model} ({meta['family']} {meta['arch']}) -> {args.out} ({fmt}; input {inputs})")


if __name__ == "__main__":
    run_stage(main)
