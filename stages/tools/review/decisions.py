"""Writing a person's keep/reject decisions into the folder the filter reads.

The layout is the one ``stages.filter.labels.folder_examples`` reads:
``<folder>/keep/<class>/<sha256><ext>`` and ``<folder>/reject/<class>/<sha256><ext>`` (it
walks ``keep/`` and ``reject/`` recursively and links each file to its crawled row by the
bytes' sha256, so the class sub-folder is only there for a person browsing the folder).
A crawled image is a member of a data/raw pack (stages.shared.packs); its decision is a
plain file holding the member's bytes, which a person can open, move or delete.
"""
from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from pathlib import Path

from stages.common.io import sha256_file, write_bytes
from stages.filter.labels import IMAGE_SUFFIXES
from stages.shared.packs import image_exists, read_bytes

SIDES = ("keep", "reject")
DECISIONS = (*SIDES, "none")     # none: take a decision back
SHA256 = re.compile(r"[0-9a-f]{64}")


class ReviewError(ValueError):
    """A request the review cannot carry out; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class CrawledImage:
    """One crawled image a person can decide on."""
    sha256: str
    cls: str
    path: Path          # the crawled image (absolute): a data/raw pack member


def check_decision(value: object) -> str:
    if value not in DECISIONS:
        raise ReviewError(f"decision must be one of {', '.join(DECISIONS)} (got {value!r})")
    return value


def inside(folder: Path, path: Path) -> bool:
    """Whether ``path`` resolves to somewhere under ``folder`` (links and '..' followed)."""
    return path.resolve().is_relative_to(folder.resolve())


def label_name(image: CrawledImage) -> str:
    """``<sha256><ext>``: the name a decision is written under, checked to be one plain file name."""
    suffix = image.path.suffix.lower()
    if not SHA256.fullmatch(image.sha256):
        raise ReviewError(f"{image.sha256!r} is not a sha256 hex digest")
    if suffix not in IMAGE_SUFFIXES:
        raise ReviewError(f"{image.path.name!r}: not an image file name ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return image.sha256 + suffix


def class_folder_name(cls: str) -> str:
    if not cls or cls in (".", "..") or "/" in cls or "\\" in cls or "\0" in cls or cls.startswith("."):
        raise ReviewError(f"class {cls!r} is not a folder name")
    return cls


def copy_atomically(source: Path, target: Path) -> None:
    """Write ``source``'s bytes (a pack member or a file) beside ``target``, then rename: the
    filter never reads half a file."""
    write_bytes(target, read_bytes(source))


def index_folder(folder: Path) -> dict[str, dict[str, list[Path]]]:
    """sha256 -> side -> files already in the folder (a person's own files included, by their bytes)."""
    index: dict[str, dict[str, list[Path]]] = {}
    for side in SIDES:
        root = folder / side
        if not root.is_dir():
            continue
        for path in sorted(root.rglob("*")):
            if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():   # as the filter reads it
                index.setdefault(sha256_file(path), {}).setdefault(side, []).append(path)
    return index


class LabelFolder:
    """The decisions in one labels folder; thread-safe (the server decides on worker threads)."""

    def __init__(self, folder: Path, crawl_dir: Path):
        self.folder, self.crawl_dir = Path(folder).absolute(), Path(crawl_dir).absolute()
        self._lock = threading.Lock()
        self._files = index_folder(self.folder)

    def decision(self, sha256: str) -> str | None:
        """keep | reject | None; a sha on both sides (put there by hand) reads as keep, as the filter
        reads it (its first label of an image wins, and it reads keep/ first)."""
        sides = self._files.get(sha256, {})
        return "keep" if "keep" in sides else "reject" if "reject" in sides else None

    def decide(self, image: CrawledImage, decision: str) -> Path | None:
        """Make ``decision`` the image's only label; returns the file that now holds it (None for none).

        Files with the same bytes on the other side go first, the new copy second: a crash in
        between loses one decision (the image comes back to the queue), never leaves it labelled
        both ways.
        """
        decision = check_decision(decision)
        target = self._target(image, decision)
        try:
            return self._apply(image, decision, target)
        except OSError as err:    # a full disk, a folder made read-only: say so, keep serving
            message = f"cannot write the decision into {self.folder}: {err.strerror or err}"
            raise ReviewError(message, status=500) from None

    def _apply(self, image: CrawledImage, decision: str, target: Path | None) -> Path | None:
        with self._lock:
            sides = self._files.setdefault(image.sha256, {})
            for side in [s for s in SIDES if s != decision and s in sides]:
                for path in sides.pop(side):
                    path.unlink(missing_ok=True)
            if target is not None and decision not in sides:
                copy_atomically(image.path, target)
                sides[decision] = [target]
                for side in SIDES:     # the filter stops on a labels folder without both
                    (self.folder / side).mkdir(parents=True, exist_ok=True)
            return sides[decision][0] if target is not None else None

    def _target(self, image: CrawledImage, decision: str) -> Path | None:
        """Where the decision goes, after refusing anything that would read or write outside."""
        if not inside(self.crawl_dir, image.path):
            raise ReviewError(f"{image.path}: not an image of the crawl in {self.crawl_dir}", status=403)
        if not image_exists(image.path):
            raise ReviewError(f"{image.path}: the crawled file is gone (crawl again?)", status=404)
        name = label_name(image)
        if decision == "none":
            return None
        target = self.folder / decision / class_folder_name(image.cls) / name
        if not inside(self.folder, target):
            raise ReviewError(f"{target}: outside the labels folder {self.folder}", status=403)
        return target

    def counts(self, class_of: dict[str, str]) -> dict[str, dict[str, int]]:
        """Per crawled class: kept and rejected (crawled images only; ``class_of``: sha256 -> class)."""
        out = {cls: {"keep": 0, "reject": 0} for cls in sorted(set(class_of.values()))}
        with self._lock:
            for sha in list(self._files):
                side = self.decision(sha)
                if side is not None and sha in class_of:
                    out[class_of[sha]][side] += 1
        return out
