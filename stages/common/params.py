"""The one params.yaml loader every stage uses.

A stage asks for the sections it reads and nothing else, each with its own dataclass:

    params = load_params(path, {"base": Base, "split": Split})
    params.base.seed, params.split.fractions

so a typo under ``train.dcgan`` cannot stop ``split``. Dotted names pick a part of a
section (``"augment.online": OnlineOps`` gives ``params.augment.online``). A key left
out of the file takes the dataclass default, and every default is the value params.yaml
ships (tests/test_params_defaults.py holds the two equal); the few keys whose shipped value
differs between two uses of one class have no default and stop with "is required". So
deleting a line never silently changes what runs. Every error names the dotted key and its
line in the file; a top-level section kiln does not know is an error in every stage.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Literal

import yaml

from stages.common.errors import PARAMS_FILE
from stages.common.schema import ParamsError, bounds, convert, from_dict

# Every top-level section of params.yaml; each stage's own dataclasses check the inside.
SECTIONS = ("base", "demo", "crawl", "filter", "split", "augment", "families", "train", "evaluate", "hpo")


@dataclass
class Base:
    seed: int = 42
    image_size: int = field(default=64, metadata=bounds(ge=16, le=1024))
    classes: list[str] = field(default_factory=lambda: ["bowl", "vase"])
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int = field(default=0, metadata=bounds(ge=0))  # 0: one per core

    def validate(self, path: str) -> None:
        if len(self.classes) < 2:
            raise ParamsError(f"{path}.classes", "needs at least two class names")
        if len(set(self.classes)) != len(self.classes):
            raise ParamsError(f"{path}.classes", f"has duplicate names: {self.classes}")


def _key_lines(node: yaml.Node, path: str, lines: dict[str, int]) -> None:
    """Dotted key -> 1-based line of that key (or list item) in the file."""
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = f"{path}.{key_node.value}" if path else str(key_node.value)
            lines[key] = key_node.start_mark.line + 1
            _key_lines(value_node, key, lines)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            key = f"{path}.{i}"
            lines[key] = item.start_mark.line + 1
            _key_lines(item, key, lines)


class ParamsFile:
    """params.yaml parsed once: the data, and where each key stands in the file."""

    def __init__(self, data: dict, lines: dict[str, int], name: str = PARAMS_FILE):
        self.data, self.lines, self.name = data, lines, name

    def line_of(self, dotted: str) -> int | None:
        """The line of ``dotted``, or of its nearest parent that is in the file."""
        parts = dotted.split(".") if dotted else []
        while parts:
            line = self.lines.get(".".join(parts))
            if line is not None:
                return line
            parts.pop()
        return None

    def raw(self, dotted: str) -> Any:
        """The YAML value at ``dotted``; None where any part of the path is absent."""
        value: Any = self.data
        for part in dotted.split("."):
            if not isinstance(value, dict):
                return None
            value = value.get(part)
        return value

    def located(self, err: ParamsError) -> ParamsError:
        err.line = err.line or self.line_of(err.path)
        err.file = err.file or self.name
        return err

    def section(self, dotted: str, cls: type) -> Any:
        """``dotted`` built as ``cls`` (a dataclass, or any type schema.convert knows)."""
        try:
            if dataclasses.is_dataclass(cls):
                return from_dict(cls, self.raw(dotted), dotted)
            return convert(cls, self.raw(dotted), dotted)
        except ParamsError as err:
            raise self.located(err) from None

    def load(self, sections: dict[str, type]) -> SimpleNamespace:
        """The named (dotted) sections as a namespace tree, each validated by its dataclass."""
        tree = SimpleNamespace()
        for dotted, cls in sections.items():
            *parents, leaf = dotted.split(".")
            node = tree
            for part in parents:
                if not hasattr(node, part):
                    setattr(node, part, SimpleNamespace())
                node = getattr(node, part)
            setattr(node, leaf, self.section(dotted, cls))
        return tree


def read_params(path: str | Path = PARAMS_FILE) -> ParamsFile:
    """Parse the file and check its top-level sections; nothing inside them yet."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise ParamsError("", f"cannot read {path}: {err.strerror}", file=str(path)) from err
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        raise ParamsError("", f"not valid YAML{f' (column {mark.column + 1})' if mark else ''}",
                          line=mark.line + 1 if mark else None, file=str(path)) from err
    lines: dict[str, int] = {}
    if node is not None:
        _key_lines(node, "", lines)
    params = ParamsFile(data if data is not None else {}, lines, str(path))
    if not isinstance(params.data, dict):
        raise ParamsError("", "must be a mapping of sections", file=str(path))
    for name in params.data:
        if name not in SECTIONS:
            raise params.located(ParamsError(str(name), f"unknown section; allowed: {', '.join(SECTIONS)}"))
    return params


def load_params(path: str | Path, sections: dict[str, type]) -> SimpleNamespace:
    """read_params(path).load(sections): what a stage that reads no family section needs."""
    return read_params(path).load(sections)
