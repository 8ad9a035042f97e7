"""Every default lives once: each config dataclass defaults to the value params.yaml ships.

Deleting a key (or a whole section) from params.yaml must not change what runs: it either
keeps the shipped value or stops with one "<key>: is required" line (a key one dataclass reads
in two places that ship different values has no default). For every section
``from_dict(cls, {})`` has to equal ``from_dict(cls, <the shipped section>)``; a disagreement
fails naming its dotted key.
"""
from __future__ import annotations

import copy
import dataclasses
import typing
from typing import Any, get_args, get_origin

import pytest
import torch
import yaml

from stages.augment.config import Augment
from stages.common.errors import params_message
from stages.common.params import Base, read_params
from stages.common.schema import ParamsError, from_dict, to_dict
from stages.crawl.config import Crawl
from stages.demo.config import Demo
from stages.families import family_module, family_section
from stages.filter.config import Filter
from stages.hpo.config import HpoConfig
from stages.split.config import Split
from tests.conftest import REPO

FAMILIES = ("classifier", "dcgan", "vae", "autoencoder")


def section_classes() -> dict[str, type]:
    """Dotted section of params.yaml -> the dataclass its stage builds it with."""
    sections: dict[str, type] = {"base": Base, "demo": Demo, "crawl": Crawl, "filter": Filter, "split": Split,
                                 "augment": Augment, "hpo.classifier": HpoConfig}
    for family in FAMILIES:
        config = family_module(family, "core.config")
        sections[f"train.{family}"] = config.TrainConfig
        sections[f"evaluate.{family}"] = config.EvaluateConfig
    return sections


SECTIONS = section_classes()


def first_difference(a: Any, b: Any, path: str) -> str | None:
    """The first dotted key where plain data ``a`` and ``b`` differ, with both values; None if equal."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in list(a) + [k for k in b if k not in a]:
            where = f"{path}.{key}"
            if key not in a or key not in b:
                return f"{where}: {a.get(key, '<absent>')!r} vs {b.get(key, '<absent>')!r}"
            found = first_difference(a[key], b[key], where)
            if found:
                return found
        return None
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            found = first_difference(x, y, f"{path}.{i}")
            if found:
                return found
        return None
    if a != b or isinstance(a, bool) != isinstance(b, bool):
        return f"{path}: {a!r} vs {b!r}"
    return None


@pytest.fixture(scope="module")
def shipped():
    return read_params(REPO / "params.yaml")


def test_first_difference_names_the_dotted_key():
    assert first_difference({"a": {"b": [1, {"c": 2}]}}, {"a": {"b": [1, {"c": 3}]}}, "s") == "s.a.b.1.c: 2 vs 3"
    assert first_difference({"a": 1}, {"a": 1, "b": 2}, "s") == "s.b: '<absent>' vs 2"
    assert first_difference({"a": [1]}, {"a": [1, 2]}, "s") == "s.a: [1] vs [1, 2]"
    assert first_difference({"a": False}, {"a": 0}, "s") == "s.a: False vs 0"
    assert first_difference({"a": 0.0, "b": [1, 2]}, {"a": 0, "b": [1, 2]}, "s") is None


def test_every_section_of_the_shipped_file_is_checked(shipped):
    """A new section (or family) in params.yaml needs its line in SECTIONS above."""
    listed = set(SECTIONS)
    for name, value in shipped.data.items():
        if name in ("train", "evaluate", "hpo"):
            assert {f"{name}.{family}" for family in value} <= listed, name
        elif name != "families":
            assert name in listed, name
    assert list(shipped.raw("families")) == list(FAMILIES)


@pytest.mark.parametrize("dotted", list(SECTIONS))
def test_defaults_are_the_shipped_values(shipped, dotted):
    cls = SECTIONS[dotted]
    section = shipped.raw(dotted)
    assert isinstance(section, dict), f"params.yaml ships no {dotted}"
    defaults = to_dict(from_dict(cls, {}, dotted))
    as_shipped = to_dict(from_dict(cls, section, dotted))
    difference = first_difference(defaults, as_shipped, dotted)
    assert difference is None, f"{cls.__name__} default vs params.yaml: {difference}"
    assert defaults == as_shipped


# --- deleting from a copy of params.yaml ---------------------------------------------------
def write_without(tmp_path, *dotted_keys: str):
    data = yaml.safe_load((REPO / "params.yaml").read_text())
    for dotted in dotted_keys:
        *parents, leaf = dotted.split(".")
        node = data
        for part in parents:
            node = node[part]
        del node[leaf]
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_deleting_train_dcgan_and_filter_keeps_the_shipped_config(tmp_path, shipped):
    path = write_without(tmp_path, "train.dcgan", "filter")
    trimmed = read_params(path)
    assert trimmed.raw("train.dcgan") is None and trimmed.raw("filter") is None
    dcgan = family_section(trimmed, "train", "dcgan")
    assert to_dict(dcgan) == to_dict(family_section(shipped, "train", "dcgan"))
    assert (dcgan.epochs, dcgan.spectral_norm, dcgan.ema_decay, dcgan.lr_d, dcgan.coarse_size,
            dcgan.diff_augment) == (60, True, 0.999, 4e-4, 8, ["color", "translation"])
    filt = trimmed.section("filter", Filter)
    assert to_dict(filt) == to_dict(shipped.section("filter", Filter))
    assert filt.cascade == ["object"] and sorted(filt.filters) == ["object", "usable"]


def test_deleting_one_key_keeps_its_shipped_value(tmp_path, shipped):
    trimmed = read_params(write_without(tmp_path, "train.dcgan.epochs"))
    assert trimmed.raw("train.dcgan.epochs") is None
    dcgan = family_section(trimmed, "train", "dcgan")
    assert dcgan.epochs == 60
    assert to_dict(dcgan) == to_dict(family_section(shipped, "train", "dcgan"))


def deletable_keys(cls: type, data: dict, path: str):
    """Every dotted key of ``data`` that names a field of dataclass ``cls`` (nested ones too,
    and those of dataclasses held in a mapping, e.g. filter.filters.object.net)."""
    hints = typing.get_type_hints(cls)
    for key, value in data.items():
        where = f"{path}.{key}"
        yield where
        tp = hints[key]
        if dataclasses.is_dataclass(tp) and isinstance(value, dict):
            yield from deletable_keys(tp, value, where)
        elif get_origin(tp) is dict and dataclasses.is_dataclass(get_args(tp)[1]) and isinstance(value, dict):
            for name, item in value.items():
                yield from deletable_keys(get_args(tp)[1], item, f"{where}.{name}")


def without(data: dict, relative: str) -> dict:
    data = copy.deepcopy(data)
    *parents, leaf = relative.split(".")
    node = data
    for part in parents:
        node = node[part]
    del node[leaf]
    return data


def deleting_each_key(shipped):
    """(dotted key, the config loaded without it or the ParamsError it raised, the shipped config)
    for every single key of every section of the shipped file."""
    for dotted, cls in SECTIONS.items():
        section = shipped.raw(dotted)
        as_shipped = to_dict(from_dict(cls, section, dotted))
        for key in deletable_keys(cls, section, dotted):
            try:
                yield key, to_dict(from_dict(cls, without(section, key[len(dotted) + 1:]), dotted)), as_shipped
            except ParamsError as err:
                yield key, err, as_shipped


def test_deleting_any_single_key_keeps_the_shipped_config_or_says_it_is_required(shipped):
    """A key whose shipped value differs between two mappings built by one dataclass (augment's
    offline vs online ops, hflip vs vflip, the object vs usable filter's net and demo labels)
    has no default, so deleting it stops with one "is required" line naming it; deleting any
    other key loads exactly the shipped config."""
    required = []
    for key, loaded, as_shipped in deleting_each_key(shipped):
        if isinstance(loaded, ParamsError):
            assert loaded.path == key and loaded.message.startswith("is required"), \
                f"deleting {key} raised {loaded}"
            required.append(key)
        else:
            difference = first_difference(loaded, as_shipped, key.split(".")[0])
            assert difference is None, f"deleting {key} changes the config: {difference}"
    # the shared ops and filter members, not whole sections, are the ones that must be written out
    assert required and all(key.startswith(("augment.offline.", "augment.online.", "filter.filters."))
                            for key in required), required
    assert {"augment.offline.elastic.p", "augment.online.vflip.p", "filter.filters.object.net.arch",
            "filter.filters.usable.labels.demo.keep"} <= set(required)


def test_a_deleted_required_key_stops_with_its_line(tmp_path):
    """Through the loader: the key's dotted name, the line of its nearest parent, "is required"."""
    path = write_without(tmp_path, "augment.offline.elastic.p", "filter.filters.object.net.weight_decay")
    lines = path.read_text().splitlines()
    params = read_params(path)
    for dotted, cls, key, parent in (("augment", Augment, "augment.offline.elastic.p", "    elastic:"),
                                     ("filter", Filter, "filter.filters.object.net.weight_decay", "      net:")):
        with pytest.raises(ParamsError, match="is required") as info:
            params.section(dotted, cls)
        assert info.value.path == key
        assert lines[info.value.line - 1].startswith(parent)
        assert params_message(info.value) == f"{path}:{info.value.line}: {key}: {info.value.message}"


def test_deleting_a_whole_block_of_required_keys_keeps_the_shipped_values(tmp_path, shipped):
    """The enclosing defaults (OfflineOps, OnlineOps, shipped_filters) write the shipped values out."""
    trimmed = read_params(write_without(tmp_path, "augment.offline", "augment.online", "filter.filters"))
    for dotted, cls in (("augment", Augment), ("filter", Filter)):
        assert to_dict(trimmed.section(dotted, cls)) == to_dict(shipped.section(dotted, cls))


# --- checkpoints saved before a key existed -------------------------------------------------
@pytest.mark.parametrize("family", ["dcgan", "vae"])
def test_a_stored_config_without_later_keys_reads_as_trained(shipped, family):
    """A checkpoint's config is to_dict of its TrainConfig: every key that existed then. One
    saved before a key existed is read over CHECKPOINT_LEGACY, not over the (shipped) defaults."""
    cls = family_module(family, "core.config").TrainConfig
    legacy = cls.CHECKPOINT_LEGACY
    names = {f.name for f in dataclasses.fields(cls)}
    assert legacy and set(legacy) <= names   # ClassVar: not a params key
    stored = to_dict(family_section(shipped, "train", family))
    assert to_dict(from_dict(cls, {**legacy, **stored}, "checkpoint.config")) == stored   # a full config wins
    old = {k: v for k, v in stored.items() if k not in legacy}
    cfg = from_dict(cls, {**legacy, **old}, "checkpoint.config")
    assert {k: getattr(cfg, k) for k in legacy} == legacy
    with pytest.raises(ParamsError, match="unknown key"):
        from_dict(cls, {"CHECKPOINT_LEGACY": {}}, f"train.{family}")


def test_the_loaders_read_an_old_checkpoint_as_trained(tmp_path, shipped):
    """load_gan and load_vae (genbase.load_model) put a stored config over CHECKPOINT_LEGACY: a
    checkpoint whose config lacks the later keys rebuilds the nets it was trained with (no
    coarse colour field, no spectral norm), where the shipped defaults would not load its weights."""
    from stages.families.dcgan.core import GanSet, load_gan
    from stages.families.dcgan.core.config import DCGANTrain
    from stages.families._shared.gen import FieldScaler
    from stages.families.vae.core import BetaVAE, load_vae
    from stages.families.vae.core.config import VAETrain
    from stages.shared.checkpoint import save_checkpoint

    def old_config(cls, family):
        full = {**to_dict(family_section(shipped, "train", family)), **cls.CHECKPOINT_LEGACY}
        return from_dict(cls, full, "test"), {k: v for k, v in full.items() if k not in cls.CHECKPOINT_LEGACY}

    cfg, stored = old_config(DCGANTrain, "dcgan")
    gans = GanSet(cfg, ["bowl", "vase"], FieldScaler.fit(torch.zeros(4, 0)), 0)
    save_checkpoint(tmp_path / "gan.pt", {"config": stored, "classes": ["bowl", "vase"], "field_dim": 0,
                                          **gans.state()})
    loaded, ckpt = load_gan(tmp_path / "gan.pt", "cpu")
    assert set(ckpt["config"]) == set(stored)
    assert {k: getattr(loaded.cfg, k) for k in DCGANTrain.CHECKPOINT_LEGACY} == DCGANTrain.CHECKPOINT_LEGACY
    assert to_dict(loaded.cfg) == to_dict(cfg) and not loaded.ema

    cfg, stored = old_config(VAETrain, "vae")
    save_checkpoint(tmp_path / "vae.pt", {"config": stored, "model": BetaVAE(cfg).state_dict()})
    model, ckpt = load_vae(tmp_path / "vae.pt", "cpu")
    assert "coarse_size" not in ckpt["config"] and model.coarse is None
