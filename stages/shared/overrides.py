"""Dotted-key overrides of a config dataclass: hpo's trial points and train's ``use_hpo``."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from stages.common.errors import StageError
from stages.common.schema import ParamsError, from_dict, to_dict


def plain(value: Any) -> Any:
    """numpy scalars (skopt hands them out) -> python values, for JSON and config checks."""
    return value.item() if hasattr(value, "item") else value


def get_dotted(data: dict, name: str, where: str) -> Any:
    node = data
    for part in name.split("."):
        if not isinstance(node, dict) or part not in node:
            raise ParamsError(where, f"{name!r} is not a key of the train config")
        node = node[part]
    return node


def apply_overrides(cfg: Any, overrides: dict[str, Any], where: str) -> Any:
    """A new config of ``type(cfg)`` with dotted-key ``overrides``, validated by the schema."""
    data = json.loads(json.dumps(to_dict(cfg)))   # deep copy as plain data
    for name, value in overrides.items():
        get_dotted(data, name, where)
        *parents, leaf = name.split(".")
        node = data
        for part in parents:
            node = node[part]
        node[leaf] = plain(value)
    return from_dict(type(cfg), data, where)


def apply_best_params(cfg: Any, path: Path, family: str) -> Any:
    """train@<family> with ``use_hpo: true``: the config with the search's best values over it."""

    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise StageError(f"{path}: no best params (run hpo@{family} first, or set use_hpo: false)") from None
    except (OSError, json.JSONDecodeError) as err:
        raise StageError(f"{path}: not a readable best-params file ({err.__class__.__name__})") from None
    if data.get("family") != family or not isinstance(data.get("params"), dict):
        raise StageError(f"{path}: not a best-params file of family {family!r}")
    return apply_overrides(cfg, data["params"], f"{path}")
