"""The two errors a stage shows a person, and the wrapper that shows them in one line.

``ParamsError`` (stages.common.schema) is a bad params.yaml value: exit 2. ``StageError``
is any other bad input (a missing file, a corrupt shard): exit 1. Neither prints a
traceback, and both are raised before a stage touches its outputs.
"""
from __future__ import annotations

import sys
from typing import Any, Callable

from stages.common.schema import ParamsError

PARAMS_FILE = "params.yaml"


class StageError(RuntimeError):
    """Bad input other than params (a missing file, a corrupt image): exit 1, one line."""


def params_message(err: ParamsError) -> str:
    """``params.yaml:57: split.fractions: must sum to 1`` (the line when the key is in the file)."""
    where = f"{err.file or PARAMS_FILE}:{err.line}" if err.line else f"{err.file or PARAMS_FILE}"
    return f"{where}: {err.path}: {err.message}" if err.path else f"{where}: {err.message}"


def run_stage(main: Callable[[list[str] | None], Any], argv: list[str] | None = None) -> None:
    """Run a stage's main; bad params exit 2 and bad input exit 1, each with one clear line."""
    try:
        main(argv)
    except ParamsError as err:
        print(f"kiln: error: {params_message(err)}", file=sys.stderr)
        sys.exit(2)
    except StageError as err:
        print(f"kiln: error: {err}", file=sys.stderr)
        sys.exit(1)
