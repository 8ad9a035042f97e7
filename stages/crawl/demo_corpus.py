"""The corpus the local engine serves: the demo, rendered by the crawl into its work dir.

``crawl.engine: local`` needs no other stage: the crawl renders the demo corpus
(stages/demo, a few seconds) beside its journal, serves it and crawls it. The corpus
is part of the crawl's fingerprint (the demo params and the renderer's code), so a
killed crawl resumes over the very corpus it had rendered, and a changed one starts
afresh. ``--demo DIR`` serves a corpus written by ``python -m stages.demo`` instead.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from stages.common.errors import StageError
from stages.common.params import Base
from stages.common.schema import to_dict
from stages.demo.__main__ import build_corpus
from stages.demo.config import Demo

PACKAGE_ROOT = Path(__file__).resolve().parents[2]
# what the rendered bytes depend on besides params: the renderer and what it writes into files
RENDER_CODE = ("stages/demo", "stages/shared/pngmeta.py", "stages/shared/demo_labels.py")
CORPUS_DIR = "demo"


def render_code_digest() -> str:
    digest = hashlib.sha256()
    for entry in RENDER_CODE:
        path = PACKAGE_ROOT / entry
        for file in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            digest.update(file.relative_to(PACKAGE_ROOT).as_posix().encode() + b"\0" + file.read_bytes())
    return digest.hexdigest()


def corpus_identity(given: Path | None, demo: Demo | None) -> str:
    """What the served corpus is, for the fingerprint: a given corpus's index, or what renders one."""
    if given is not None:
        index = given / "index.jsonl"
        if not index.is_file():
            raise StageError(f"{index} not found: --demo serves a corpus written by python -m stages.demo")
        return hashlib.sha256(index.read_bytes()).hexdigest()
    return json.dumps({"demo": to_dict(demo), "code": render_code_digest()}, sort_keys=True)


def ensure_corpus(workdir: Path, base: Base, demo: Demo) -> Path:
    """``workdir/demo``, rendered unless a killed run already finished it (written atomically)."""
    corpus = workdir / CORPUS_DIR
    if (corpus / "index.jsonl").is_file():
        return corpus
    for leftover in workdir.glob(f".{CORPUS_DIR}.*"):   # a render a kill interrupted
        shutil.rmtree(leftover, ignore_errors=True)
    print(build_corpus(corpus, base, demo, workers=min(4, os.cpu_count() or 1)))
    return corpus
