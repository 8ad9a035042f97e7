"""Dataset manifests (JSON lines with at least ``path``, ``sha256``, ``class``): one reader
that validates every row, for every stage that takes one as input."""
from __future__ import annotations

from pathlib import Path

from stages.common.errors import StageError
from stages.common.io import read_jsonl


def read_manifest(path: Path, producer: str = "the previous stage") -> list[dict]:
    """Every row, checked: string path/sha256/class, a class usable as a folder name."""
    try:
        rows = read_jsonl(path)
    except FileNotFoundError:
        raise StageError(f"{path}: input manifest not found (run {producer} first)") from None
    except ValueError as err:
        raise StageError(str(err)) from err
    for line_no, row in enumerate(rows, 1):
        missing = [key for key in ("path", "sha256", "class") if not isinstance(row.get(key), str)]
        if missing:
            raise StageError(f"{path}:{line_no}: row lacks {', '.join(missing)}")
        if "/" in row["class"] or row["class"] in ("", ".", ".."):
            raise StageError(f"{path}:{line_no}: class {row['class']!r} is not a folder name")
    return rows
