"""The crawl's resume journal and blob store, outside DVC outputs (.kiln/crawl/<fingerprint>/).

``dvc repro`` deletes a stage's outputs before running it, so progress cannot live in
data/raw. Here every finished search and every finished download appends one JSON
line to journal.jsonl (one write on an O_APPEND descriptor), and every kept image is
stored as blobs/<sha256>.<ext> by temp file + rename *before* its line is written.
After ``kill -9`` the journal holds only whole, true lines (a torn last line is cut
off on reopen); a rerun skips what it records and fetches only the rest.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from stages.common.io import sha256_file


def work_dir(root: Path, fingerprint: str) -> Path:
    """``root/<fingerprint>``; journals of other settings are stale and removed."""
    root.mkdir(parents=True, exist_ok=True)
    for other in root.iterdir():
        if other.name != fingerprint and other.is_dir():
            shutil.rmtree(other, ignore_errors=True)
    path = root / fingerprint
    (path / "blobs").mkdir(parents=True, exist_ok=True)
    for leftover in (path / "blobs").glob(".blob.*"):   # temp files of a killed run
        leftover.unlink(missing_ok=True)
    return path


def search_key(record: dict) -> tuple:
    """(term, class) of a search; a folder source with train/ val/ test/ trees searches each
    class once per split, so its key adds the split."""
    key = (record["term"], record["class"])
    return key + (record["split"],) if record.get("split") else key


def _cut_torn_tail(path: Path) -> None:
    """Drop a last line that a kill left without its newline."""
    if not path.exists():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with open(path, "r+b") as fh:
            fh.truncate(data.rfind(b"\n") + 1)


class Journal:
    def __init__(self, directory: Path):
        self.path = directory / "journal.jsonl"
        self.blobs = directory / "blobs"
        _cut_torn_tail(self.path)
        self.searches: dict[tuple, dict] = {}   # search_key -> search record
        self.items: dict[str, dict] = {}                   # url key -> download record
        self._load()
        self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def _load(self) -> None:
        if not self.path.exists():
            return
        for line in self.path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue   # cannot happen with whole-line appends; never trust it anyway
            if record["kind"] == "search":
                self.searches[search_key(record)] = record
            elif not record["ok"] or self._blob_intact(record):
                self.items[record["key"]] = record

    def _blob_intact(self, record: dict) -> bool:
        blob = self.blob_path(record["sha256"], record["ext"])
        return blob.is_file() and sha256_file(blob) == record["sha256"]

    def blob_path(self, sha256: str, ext: str) -> Path:
        return self.blobs / f"{sha256}.{ext}"

    def put_blob(self, sha256: str, ext: str, data: bytes) -> None:
        """Store bytes under their hash; temp + rename, so a blob is whole or absent."""
        final = self.blob_path(sha256, ext)
        if final.exists():
            return
        fd, tmp = tempfile.mkstemp(prefix=".blob.", dir=self.blobs)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, final)

    def append(self, record: dict) -> None:
        os.write(self.fd, (json.dumps(record, sort_keys=True) + "\n").encode())
        if record["kind"] == "search":
            self.searches[search_key(record)] = record
        else:
            self.items[record["key"]] = record

    def close(self) -> None:
        os.close(self.fd)
