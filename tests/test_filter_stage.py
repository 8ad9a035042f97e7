"""The filter stage end to end on a tiny fake raw folder built with PIL."""
import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image, ImageFilter

from stages.filter.__main__ import main
from stages.shared.neardup import group_near_duplicates
from stages.common.errors import run_stage
from stages.shared.packs import list_members, member_name, packed_path, read_bytes, write_packs

TINY_FILTER = {
    "quality": {"near_max_distance": 10},
    "cascade": ["object"],
    "filters": {"object": {
        "members": 2, "vote": "all", "threshold": 0.5, "holdout": 0.25,
        "net": {"arch": "bnconv", "image_size": 16, "widths": [8, 16], "hidden": [16], "epochs": 3, "batch_size": 16,
                "lr": 0.01, "weight_decay": 0.0001},
        "labels": {"demo": {"keep": ["pot"], "reject": ["distractor"]}}}},
    "contact_sheet": 8,
}


def pot(rng) -> Image.Image:
    """A bright disc somewhere on a dark textured background."""
    yy, xx = np.mgrid[0:48, 0:48]
    img = rng.normal(40, 10, (48, 48, 3))
    cx, cy, r = rng.uniform(16, 32), rng.uniform(16, 32), rng.uniform(8, 14)
    disc = (xx - cx) ** 2 + (yy - cy) ** 2 < r ** 2
    img[disc] = rng.uniform(150, 255, 3) * (0.7 + 0.3 * xx[disc, None] / 48)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def distractor(rng) -> Image.Image:
    """Stripes: colourful, sharp, and no disc."""
    period = rng.uniform(3, 8)
    xx = np.arange(48)[None, :, None] + np.arange(48)[:, None, None] * rng.uniform(-1, 1)
    a, b = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    stripes = np.where((xx // period) % 2 == 0, a, b) + rng.normal(0, 5, (48, 48, 3))
    return Image.fromarray(np.clip(stripes, 0, 255).astype(np.uint8))


def encode(img: Image.Image, fmt="PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def build_corpus(root: Path, with_truth: bool = True) -> None:
    """data/raw as the crawl writes it; with_truth: each row carries the ground truth its file
    embedded, as the demo's images do (and pots their factors)."""
    rng = np.random.default_rng(0)
    items = []   # (class, kind, junk, bytes, ext)
    for cls in ("bowl", "vase"):
        pots = [encode(pot(rng)) for _ in range(14)]
        items += [(cls, "pot", None, data, "png") for data in pots]
        items += [(cls, "distractor", None, encode(distractor(rng)), "png") for _ in range(5)]
        original = Image.open(io.BytesIO(pots[0])).convert("RGB")
        items += [
            (cls, "junk", "exact_duplicate", encode(original, compress_level=0), "png"),
            (cls, "junk", "near_duplicate", encode(original, "JPEG", quality=85), "jpg"),
            (cls, "junk", "dark", encode(Image.fromarray((np.asarray(pot(rng)) * 0.05).astype(np.uint8))), "png"),
            (cls, "junk", "blurry", encode(pot(rng).filter(ImageFilter.GaussianBlur(5))), "png"),
            (cls, "junk", "tiny", encode(pot(rng).resize((12, 12))), "png"),
            (cls, "junk", "grayscale", encode(pot(rng).convert("L")), "png"),
            (cls, "junk", "blank", encode(Image.new("RGB", (48, 48), tuple(rng.integers(0, 255, 3).tolist()))), "png"),
            (cls, "junk", "truncated", encode(pot(rng))[:300], "png"),
        ]
    raw, manifest, members = root / "data/raw", [], []
    for k, (cls, kind, junk, data, ext) in enumerate(items):
        sha = hashlib.sha256(data).hexdigest()
        members.append((member_name(cls, sha, ext), data))
        truth = {"kind": kind, "junk": junk} if with_truth else None
        factors = {"height": k / len(items)} if with_truth and kind == "pot" else None
        manifest.append({"path": packed_path("data/raw", cls, sha, ext), "sha256": sha, "class": cls,
                         "fields": None, "factors": factors, "truth": truth, "term": cls, "engine": "local"})
    write_packs(raw, members)
    (raw / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in manifest))


def write_params(root: Path, filter_section: dict) -> None:
    (root / "params.yaml").write_text(yaml.safe_dump({"base": {"seed": 1, "classes": ["bowl", "vase"],
                                                                "threads": 1},
                                                       "filter": filter_section}))


ARGS = ["--input", "data/raw/manifest.jsonl", "--out", "data/filtered",
        "--models", "models/filter", "--metrics", "metrics/filter.json", "--sheets", "metrics/filter"]


def snapshot(folder: Path) -> dict:
    return {p.as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def test_stage_on_tiny_raw_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    build_corpus(tmp_path)
    write_params(tmp_path, TINY_FILTER)
    raw_before = snapshot(tmp_path / "data/raw")
    main(ARGS)
    assert snapshot(tmp_path / "data/raw") == raw_before            # raw is never touched

    raw = {r["sha256"]: r for r in map(json.loads, open("data/raw/manifest.jsonl"))}
    truth = {sha: row["truth"] for sha, row in raw.items()}
    rejected = [json.loads(line) for line in open("data/filtered/rejected.jsonl")]
    kept = [json.loads(line) for line in open("data/filtered/manifest.jsonl")]
    assert len(kept) + len(rejected) == len(truth)
    expected_reason = {"exact_duplicate": "exact_duplicate", "near_duplicate": "near_duplicate",
                       "dark": "dark", "blurry": "blurry", "tiny": "too_small", "grayscale": "grayscale",
                       "blank": "low_information", "truncated": "corrupt"}
    for row in rejected:
        junk = truth[row["sha256"]]["junk"]
        if junk:
            assert expected_reason[junk] in row["reasons"], (junk, row["reasons"])
    junk_kept = [truth[r["sha256"]]["junk"] for r in kept if truth[r["sha256"]]["junk"]]
    assert junk_kept == []
    for row in kept:
        assert row["path"] == packed_path("data/filtered", row["class"], row["sha256"], Path(row["raw_path"]).suffix)
        assert len(row["phash"]) == 16 and row["raw_path"].startswith("data/raw/")
        assert hashlib.sha256(read_bytes(row["path"])).hexdigest() == row["sha256"]
    assert list_members("data/filtered") == sorted(row["path"] for row in kept)   # the kept images, no other
    # the rows' ground truth and factors (the demo embeds them, the crawl reads them) pass
    # through to the kept pots: split carries the factors on, for MIG
    kept_pots = [r for r in kept if truth[r["sha256"]]["kind"] == "pot"]
    assert kept_pots and all(r["factors"] and r["factors"] == raw[r["sha256"]]["factors"] for r in kept_pots)
    assert all(r["truth"] == truth[r["sha256"]] for r in kept + rejected)
    # the kept rows carry what split needs to group without decoding
    assert len(group_near_duplicates(kept, 4)) == len(kept)

    checkpoint = torch.load("models/filter/object.pt", weights_only=True)
    assert len(checkpoint["members"]) == 2 and checkpoint["config"]["vote"] == "all"
    assert json.load(open("models/filter/cascade.json")) == {"ran": ["object"], "skipped": {}}
    metrics = json.load(open("metrics/filter.json"))
    assert metrics["counts"]["input"] == len(truth)
    assert metrics["demo"]["all"]["junk_recall"] == 1.0
    assert metrics["demo"]["all"]["junk_precision"] == 1.0
    assert set(metrics["filters"]["object"]["heldout"]) >= {"precision", "recall", "f1"}
    for reason in metrics["counts"]["by_reason"]:
        assert Path(f"metrics/filter/{reason.replace(':', '-')}.png").is_file()


@pytest.mark.parametrize("bad, key", [
    ({"vote": "unanimous"}, "filter.filters.object.vote"),
    ({"threshold": 1.5}, "filter.filters.object.threshold"),
    ({"members": 0}, "filter.filters.object.members"),
    ({"net": {**TINY_FILTER["filters"]["object"]["net"], "widths": [8, 8, 8, 8, 8]}},
     "filter.filters.object.net.image_size"),
    ({"net": {"arch": "bnconv", "image_size": 16}}, "filter.filters.object.net.hidden"),   # required
    ({"max_examples": -1}, "filter.filters.object.max_examples"),
])
def test_bad_filter_params_exit_2(tmp_path, monkeypatch, capsys, bad, key):
    monkeypatch.chdir(tmp_path)
    section = json.loads(json.dumps(TINY_FILTER))
    section["filters"]["object"].update(bad)
    write_params(tmp_path, section)
    with pytest.raises(SystemExit) as exit_info:
        run_stage(main, ARGS)
    assert exit_info.value.code == 2
    assert key in capsys.readouterr().err


@pytest.mark.parametrize("bad, key", [
    ({"cascade": ["object", "usable"]}, "filter.cascade.1"),
    ({"quality": {"checks": ["blurry", "wobbly"]}}, "filter.quality.checks.1"),
    ({"quality": {"grayscale": "maybe"}}, "filter.quality.grayscale"),
])
def test_bad_cascade_and_checks_exit_2(tmp_path, monkeypatch, capsys, bad, key):
    monkeypatch.chdir(tmp_path)
    write_params(tmp_path, {**TINY_FILTER, **bad})
    with pytest.raises(SystemExit) as exit_info:
        run_stage(main, ARGS)
    assert exit_info.value.code == 2
    assert key in capsys.readouterr().err


def test_missing_manifest_exits_1(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write_params(tmp_path, TINY_FILTER)
    with pytest.raises(SystemExit) as exit_info:
        run_stage(main, ARGS)
    assert exit_info.value.code == 1
    assert "data/raw/manifest.jsonl" in capsys.readouterr().err


def test_no_reject_labels_exits_1(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    build_corpus(tmp_path)
    section = json.loads(json.dumps(TINY_FILTER))
    section["filters"]["object"]["labels"]["demo"] = {"keep": ["pot"], "reject": []}
    write_params(tmp_path, section)
    with pytest.raises(SystemExit) as exit_info:
        run_stage(main, ARGS)
    assert exit_info.value.code == 1
    assert "filter.filters.object.labels" in capsys.readouterr().err
    assert not Path("data/filtered").exists()


def test_empty_cascade_says_so_in_one_line_and_leaves_a_cascade_file(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    build_corpus(tmp_path)
    write_params(tmp_path, {**TINY_FILTER, "cascade": []})
    main(ARGS)
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0] == "filter: no cascade; quality checks only"
    assert len(out) == 2 and "ensembles" not in out[1] and "img/s" in out[1]   # the quality speed only
    assert json.load(open("models/filter/cascade.json")) == {"ran": [], "skipped": {}}
    assert [p.name for p in Path("models/filter").iterdir()] == ["cascade.json"]
    metrics = json.load(open("metrics/filter.json"))
    assert metrics["filters"] == {} and not any(r.startswith("filter:") for r in metrics["counts"]["by_reason"])


def test_two_filter_cascade_trains_and_reports_both(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    build_corpus(tmp_path)
    section = json.loads(json.dumps(TINY_FILTER))
    usable = json.loads(json.dumps(section["filters"]["object"]))
    usable["labels"]["demo"] = {"keep": ["pot", "distractor"], "reject": ["dark", "blurry", "blank", "grayscale"]}
    section["filters"]["usable"] = usable
    section["cascade"] = ["object", "usable"]
    write_params(tmp_path, section)
    main(ARGS)
    metrics = json.load(open("metrics/filter.json"))
    assert set(metrics["filters"]) == {"object", "usable"}
    assert metrics["filters"]["usable"]["heldout"]["n"] > 0
    assert {p.name for p in Path("models/filter").iterdir()} == {"object.pt", "usable.pt", "cascade.json"}
    # 'usable' only scores images 'object' kept: none of its rejections carries an object rejection
    for row in map(json.loads, open("data/filtered/rejected.jsonl")):
        assert not {"filter:object", "filter:usable"} <= set(row["reasons"])
        if "filter:usable" in row["reasons"]:
            assert row["filter_probs"]["object"] and row["filter_probs"]["usable"]


def test_per_class_filter_takes_other_classes_as_negatives(tmp_path, monkeypatch):
    """per_class + weak labels: one ensemble per class, scored per row by its own class's ensemble."""
    monkeypatch.chdir(tmp_path)
    build_corpus(tmp_path)
    section = json.loads(json.dumps(TINY_FILTER))
    section["filters"]["object"].update(per_class=True, threshold=0.0,
                                        labels={"weak": True, "demo": {"keep": [], "reject": []}})
    write_params(tmp_path, section)
    main(ARGS)
    checkpoint = torch.load("models/filter/object.pt", weights_only=True)
    assert checkpoint["per_class"] and set(checkpoint["members"]) == {"bowl", "vase"}
    assert all(len(states) == 2 for states in checkpoint["members"].values())
    metrics = json.load(open("metrics/filter.json"))
    assert metrics["filters"]["object"]["heldout"]["n"] > 0          # pooled over both classes
    assert metrics["counts"]["by_reason"].get("filter:object", 0) == 0   # threshold 0 keeps all


def shades(root: Path, values) -> list[str]:
    paths = []
    for k, shade in enumerate(values):
        paths.append(str(root / f"img{k}.png"))
        Image.new("RGB", (20, 20), (shade, shade // 2, 255 - shade)).save(paths[-1])
    return paths


PROBE_NET = {"arch": "mobilenet_v2", "image_size": 32, "hidden": [], "epochs": 20, "weight_decay": 0.001}
BNCONV_NET = {"arch": "bnconv", "image_size": 16, "widths": [8, 16], "hidden": [16], "epochs": 1,
              "weight_decay": 0.0001}


def test_probe_features_are_computed_once_in_chunks_and_keep_example_order(tmp_path, monkeypatch):
    """Crawled examples reuse the rows' features; a curated image outside the crawl is read itself."""
    import stages.filter.__main__ as filter_stage
    from stages.filter.__main__ import MemberInputs
    from stages.filter.config import FilterNet
    from stages.filter.labels import Example

    paths = shades(tmp_path, (30, 120, 220, 90))
    calls = []
    real = filter_stage.load_images
    monkeypatch.setattr(filter_stage, "load_images", lambda p, s, **kw: calls.append(len(p)) or real(p, s, **kw))
    cache = MemberInputs([{"path": p} for p in paths[:3]], torch.device("cpu"), chunk=2)
    net = FilterNet(**PROBE_NET)
    examples = [Example(paths[3], 0, "folder", None), Example(paths[1], 1, "demo", 1), Example(paths[0], 1, "demo", 0)]
    got = cache.examples(examples, net)
    assert calls == [2, 1, 1]                      # the 3 rows in chunks of 2, then the loose image
    features = cache.features(net)
    assert features.shape == (3, 1280) and features.dtype == torch.float32
    assert torch.equal(got[1], features[1]) and torch.equal(got[2], features[0])
    assert not torch.allclose(got[0], features[2])                          # its own file, not a row's
    cache.examples(examples[1:], net)
    cache.probs([build_state(net)], net, np.array([2, 0]))
    assert calls == [2, 1, 1]                      # nothing read again


def build_state(net) -> dict:
    from stages.filter.ensemble import build_member
    torch.manual_seed(0)
    return build_member(net).state_dict()


def test_convnet_reads_only_its_examples_and_keeps_no_crawl_pixels(tmp_path, monkeypatch):
    import stages.filter.__main__ as filter_stage
    from stages.filter.__main__ import MemberInputs
    from stages.filter.config import FilterNet
    from stages.filter.labels import Example

    paths = shades(tmp_path, (30, 120, 220, 90, 160))
    calls = []
    real = filter_stage.load_images
    monkeypatch.setattr(filter_stage, "load_images", lambda p, s, **kw: calls.append(list(p)) or real(p, s, **kw))
    cache = MemberInputs([{"path": p} for p in paths[:4]], torch.device("cpu"), chunk=3)
    net = FilterNet(**BNCONV_NET)
    got = cache.examples([Example(paths[4], 0, "folder", None), Example("elsewhere.png", 1, "folder", 2)], net)
    assert calls == [[paths[4], paths[2]]]         # the loose file, and a linked one from its crawl row
    assert got.shape == (2, 3, 16, 16) and got.dtype == torch.uint8
    assert got[0].float().mean() != got[1].float().mean()
    calls.clear()
    cache.probs([build_state(net)], net, np.array([3, 1, 0, 2]))
    assert calls == [[paths[3], paths[1], paths[0]], [paths[2]]]     # the cascade's rows, a chunk at a time


@pytest.mark.parametrize("net", [PROBE_NET, BNCONV_NET])
def test_chunked_member_inputs_and_probs_equal_whole(tmp_path, net):
    from stages.filter.__main__ import MemberInputs
    from stages.filter.config import FilterNet
    from stages.filter.ensemble import ensemble_probs, member_inputs
    from stages.filter.labels import Example
    from stages.shared.images import load_images

    paths = shades(tmp_path, range(10, 250, 24))                    # 10 images
    rows, net = [{"path": p} for p in paths], FilterNet(**net)
    chunked, whole = (MemberInputs(rows, torch.device("cpu"), chunk=c) for c in (3, 1024))
    examples = [Example(p, k % 2, "demo", k) for k, p in enumerate(paths)][::-1]
    assert torch.allclose(chunked.examples(examples, net), whole.examples(examples, net), atol=1e-5)
    reference = member_inputs(load_images(paths, net.image_size), net, torch.device("cpu"))   # all at once
    assert torch.allclose(chunked.examples(examples, net), reference.flip(0), atol=1e-5)
    states, index = [build_state(net), build_state(net)], np.array([9, 0, 4, 5, 1, 7, 2])
    expected = ensemble_probs(states, net, reference[index], torch.device("cpu"))
    assert np.allclose(chunked.probs(states, net, index), expected, atol=1e-5)
    assert np.allclose(whole.probs(states, net, index), expected, atol=1e-5)
    assert chunked.probs(states, net, index[:0]).shape == (2, 0)


def labelled(n_keep: int, n_reject: int):
    from stages.filter.labels import Example
    return [Example(f"{k}.png", int(k < n_keep), "demo", k) for k in range(n_keep + n_reject)]


def test_cap_draws_a_seeded_label_stratified_sample_in_order():
    from stages.filter.labels import cap_examples
    examples = labelled(900, 100)
    sample = cap_examples(examples, 200, seed=5)
    assert len(sample) == 200 and sum(e.keep for e in sample) == 180          # the 9:1 share kept
    assert [e.row for e in sample] == sorted(e.row for e in sample)           # example order kept
    assert cap_examples(examples, 200, seed=5) == sample                      # same seed, same sample
    assert cap_examples(examples, 200, seed=6) != sample
    assert cap_examples(examples, 0, seed=5) == examples                      # 0: no cap
    assert cap_examples(examples, 1000, seed=5) == examples                   # under the cap: all
    rare = cap_examples(labelled(999, 1), 10, seed=5)                         # a rare label stays present
    assert len(rare) == 10 and sum(1 - e.keep for e in rare) == 1


def test_max_examples_caps_what_a_filter_trains_and_scores_on(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    build_corpus(tmp_path)
    section = json.loads(json.dumps(TINY_FILTER))
    section["filters"]["object"]["max_examples"] = 20             # of 38 labelled pots and distractors
    write_params(tmp_path, section)
    main(ARGS)
    scores = json.load(open("metrics/filter.json"))["filters"]["object"]
    assert scores["n_train"] + scores["heldout"]["n"] == 20
    assert scores["heldout"]["n"] == 5 and scores["heldout"]["n_reject"] == 1   # holdout 0.25 of the sample
