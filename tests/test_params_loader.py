"""The params.yaml loader on a copy of the shipped file: errors carry the key's line, and a
stage reads only its own sections."""
from __future__ import annotations

import pytest

from stages.common.params import Base, load_params, read_params
from stages.common.schema import ParamsError
from stages.families import family_section
from stages.split.config import Split
from tests.conftest import REPO


def shipped_lines() -> list[str]:
    return (REPO / "params.yaml").read_text().splitlines()


def line_of(lines: list[str], text: str, after: int = 0) -> int:
    """1-based number of the first line after line ``after`` that starts with ``text``."""
    found = [i + 1 for i, line in enumerate(lines) if i >= after and line.startswith(text)]
    assert found, f"no line starts with {text!r} after line {after}"
    return found[0]


def write(tmp_path, lines: list[str]):
    path = tmp_path / "params.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_unknown_top_level_section_names_it_and_its_line(tmp_path):
    lines = shipped_lines()
    at = line_of(lines, "train:")
    lines[at - 1] = "trian:"                                 # a typo of the whole section
    path = write(tmp_path, lines)
    for load in (lambda: read_params(path), lambda: load_params(path, {"base": Base, "split": Split})):
        with pytest.raises(ParamsError, match="unknown section") as info:
            load()
        err = info.value
        assert (err.path, err.line, err.file) == ("trian", at, str(path))
        assert "train" in err.message          # the allowed sections are listed


def test_bad_value_deep_inside_reports_its_line(tmp_path):
    lines = shipped_lines()
    at = line_of(lines, "  fractions:")
    assert lines[at - 1] == "  fractions: {train: 0.7, val: 0.15, test: 0.15}"
    lines[at - 1:at] = ["  fractions:", "    val: 0.15", "    train: 2", "    test: 0.15"]   # block style
    path = write(tmp_path, lines)
    with pytest.raises(ParamsError, match="must be <= 1") as info:
        load_params(path, {"base": Base, "split": Split})
    assert (info.value.path, info.value.line) == ("split.fractions.train", at + 2)

    lines = shipped_lines()                    # the shipped flow style: the key's line is its line
    lines[at - 1] = "  fractions: {train: 2, val: 0.15, test: 0.15}"
    with pytest.raises(ParamsError) as info:
        load_params(write(tmp_path, lines), {"split": Split})
    assert (info.value.path, info.value.line) == ("split.fractions.train", at)


def test_a_typo_under_train_dcgan_does_not_stop_other_stages(tmp_path):
    lines = shipped_lines()
    epochs = line_of(lines, "    epochs:", after=line_of(lines, "  dcgan:", after=line_of(lines, "train:")))
    lines[epochs - 1] = lines[epochs - 1].replace("epochs:", "epochz:")
    path = write(tmp_path, lines)
    params = load_params(path, {"base": Base, "split": Split})
    assert params.base.seed == 42 and params.split.fractions.train == 0.7
    with pytest.raises(ParamsError, match="unknown key") as info:   # the dcgan stages still stop
        family_section(read_params(path), "train", "dcgan")
    assert (info.value.path, info.value.line) == ("train.dcgan.epochz", epochs)
