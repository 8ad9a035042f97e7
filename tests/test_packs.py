"""Image packs (stages.shared.packs): names, deterministic writing, reading members and files."""
from __future__ import annotations

import hashlib
import io
import os
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from stages.shared import packs
from stages.shared.images import load_images
from stages.shared.packs import member_name, open_image, packed_path, read_bytes, write_packs


def _png(colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 6), colour).save(buffer, "PNG")
    return buffer.getvalue()


def _members(count: int) -> list[tuple[str, bytes]]:
    """(name, bytes) of ``count`` distinct PNGs over two classes, named by their sha256."""
    out = []
    for k in range(count):
        data = _png((k % 256, k // 256, 7))
        out.append((member_name("bowl" if k % 2 else "pot", hashlib.sha256(data).hexdigest(), "png"), data))
    return out


def _open_files() -> list[str]:
    """What this process's file descriptors point at (the listing's own fd is gone by the readlink)."""
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            out.append(os.readlink(f"/proc/self/fd/{fd}"))
        except FileNotFoundError:
            pass
    return out


def test_names_put_an_image_in_its_class_pack_by_the_first_two_hex_digits():
    sha = "fd" + "c9" * 31
    assert member_name("bowl", sha, ".png") == f"bowl/fd.zip/{sha}.png"
    assert packed_path("data/raw", "bowl", sha, "png") == f"data/raw/bowl/fd.zip/{sha}.png"
    assert packed_path(Path("/x/data/filtered"), "pot", sha, "jpg") == f"/x/data/filtered/pot/fd.zip/{sha}.jpg"


def test_round_trip_reads_members_and_plain_files(tmp_path):
    members = _members(40)
    written = write_packs(tmp_path / "raw", members)
    assert {p.relative_to(tmp_path / "raw").as_posix() for p in written} == {n.rsplit("/", 1)[0] for n, _ in members}
    for name, data in members:
        path = tmp_path / "raw" / name
        assert read_bytes(path) == data and read_bytes(str(path)) == data
        with open_image(path) as fh:
            assert fh.read() == data and fh.name == str(path)
    loose = tmp_path / "labels" / "keep" / "a.png"
    loose.parent.mkdir(parents=True)
    loose.write_bytes(members[0][1])
    assert read_bytes(loose) == members[0][1]
    assert packs.image_exists(tmp_path / "raw" / members[0][0]) and packs.image_exists(loose)
    assert not packs.image_exists(tmp_path / "raw" / members[0][0].replace(".png", ".jpg"))
    # the decode every stage uses reads a member exactly as it reads the same bytes from a file
    pixels = load_images([tmp_path / "raw" / members[0][0], loose], 16)
    assert pixels.shape == (2, 3, 16, 16) and bool((pixels[0] == pixels[1]).all())


def test_a_folder_named_like_a_pack_holds_plain_files(tmp_path):
    folder = tmp_path / "photos.zip"
    folder.mkdir()
    (folder / "a.png").write_bytes(b"plain")
    assert read_bytes(folder / "a.png") == b"plain"


def test_same_members_in_any_order_give_byte_identical_packs(tmp_path):
    members = _members(60)
    source = tmp_path / "blob.png"            # a source may be a file to read the bytes from
    source.write_bytes(members[0][1])
    first = write_packs(tmp_path / "a", [(members[0][0], source), *members[1:]])
    second = write_packs(tmp_path / "b", list(reversed(members)))
    assert [p.relative_to(tmp_path / "a") for p in first] == [p.relative_to(tmp_path / "b") for p in second]
    for a, b in zip(first, second):
        assert a.read_bytes() == b.read_bytes()
    with zipfile.ZipFile(first[0]) as archive:
        infos = archive.infolist()
    assert [i.filename for i in infos] == sorted(i.filename for i in infos)
    assert {(i.date_time, i.compress_type, i.external_attr >> 16) for i in infos} == {
        ((1980, 1, 1, 0, 0, 0), zipfile.ZIP_STORED, 0o644)}


def test_a_pack_member_can_be_the_source_of_another_pack(tmp_path):
    members = _members(6)
    write_packs(tmp_path / "raw", members)
    write_packs(tmp_path / "filtered", [(name, tmp_path / "raw" / name) for name, _ in members[:3]])
    assert [read_bytes(tmp_path / "filtered" / n) for n, _ in members[:3]] == [d for _, d in members[:3]]


def test_missing_pack_or_member_names_the_full_path(tmp_path):
    name, data = _members(1)[0]
    write_packs(tmp_path, [(name, data)])
    other_member = tmp_path / name.replace(name.rsplit("/", 1)[1], "0" * 64 + ".png")
    other_pack = tmp_path / "bowl" / "00.zip" / ("0" * 64 + ".png")
    for path in (other_member, other_pack):
        with pytest.raises(FileNotFoundError) as err:
            read_bytes(path)
        assert str(path) in str(err.value)
    with pytest.raises(Exception, match=str(other_member)):
        load_images([other_member], 16)      # the stages' own "no such image file" error


def test_bad_names_and_twice_packed_members_are_refused(tmp_path):
    with pytest.raises(ValueError, match="not a packed name"):
        write_packs(tmp_path, [("bowl/a.png", b"x")])
    with pytest.raises(ValueError, match="packed twice"):
        write_packs(tmp_path, [("bowl/00.zip/a.png", b"x"), ("bowl/00.zip/a.png", b"x")])


def test_tables_stay_bounded_no_file_stays_open_and_a_replaced_pack_is_read_anew(tmp_path, monkeypatch):
    monkeypatch.setattr(packs, "_tables", packs._PackTables(limit=3))
    members = [(f"c/{k:02x}.zip/{k:02x}.png", bytes([k]) * 10) for k in range(10)]
    write_packs(tmp_path, members)
    for name, data in members * 2:
        assert read_bytes(tmp_path / name) == data
        assert len(packs._tables.tables) <= 3
    if Path("/proc/self/fd").is_dir():
        assert not [link for link in _open_files() if link.startswith(str(tmp_path))]
    replaced = tmp_path / members[-1][0]
    write_packs(tmp_path / "new", [(members[-1][0], b"new bytes, another length")])
    os.replace(tmp_path / "new" / members[-1][0].rsplit("/", 1)[0], replaced.parent)
    assert read_bytes(replaced) == b"new bytes, another length"    # not the old table's offsets


def test_a_damaged_pack_is_an_error_naming_the_image(tmp_path):
    name, data = _members(1)[0]
    pack = write_packs(tmp_path, [(name, data)])[0]
    raw = bytearray(pack.read_bytes())
    at = bytes(raw).index(data[20:40])
    raw[at] ^= 0xFF                                   # one flipped byte inside the image
    pack.write_bytes(bytes(raw))
    with pytest.raises(OSError, match="CRC") as err:
        read_bytes(tmp_path / name)
    assert str(tmp_path / name) in str(err.value)
    pack.write_bytes(b"not a zip at all")
    with pytest.raises(OSError, match="damaged pack"):
        read_bytes(tmp_path / name)
    assert not packs.image_exists(tmp_path / name)


def test_split_reads_packed_images_as_it_reads_loose_ones(tmp_path, repo_params):
    """The split stage over a packed manifest gives the same pixels and image store as over
    the same images loose (paths differ, so the indexes do; the chunks must not)."""
    import json

    from stages.shared.shards import load_shard
    from tests.helpers import shapes_dataset
    from tests.test_split import run_split

    loose = shapes_dataset(tmp_path / "loose", per_class=12)
    rows = [json.loads(line) for line in loose.read_text().splitlines()]
    members = [(member_name(r["class"], r["sha256"], "png"), r["path"]) for r in rows]
    write_packs(tmp_path / "packed", members)
    packed = tmp_path / "packed" / "manifest.jsonl"
    packed.write_text("".join(json.dumps({**r, "path": packed_path(tmp_path / "packed", r["class"], r["sha256"], "png")})
                              + "\n" for r in rows))
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    out_loose = run_split(tmp_path / "a", repo_params, loose, near_duplicates=4)
    out_packed = run_split(tmp_path / "b", repo_params, packed, near_duplicates=4)
    for shard in ("train.pt", "val.pt", "test.pt"):
        a, b = load_shard(out_loose / shard), load_shard(out_packed / shard)
        assert a.sha256 == b.sha256 and bool((a.images == b.images).all())
        assert all("/packed/" in p and ".zip/" in p for p in b.paths)
    chunks = sorted(p.name for p in (out_loose / "full").glob("*.tar"))
    assert chunks and chunks == sorted(p.name for p in (out_packed / "full").glob("*.tar"))
    assert all((out_loose / "full" / c).read_bytes() == (out_packed / "full" / c).read_bytes() for c in chunks)


def test_the_filters_worker_processes_read_packs(tmp_path):
    """measure_all's pool (fork server workers) reads members as this process does."""
    from stages.filter.measure_pool import POOL_MIN_IMAGES, measure_all

    members = [(name, data) for name, data in _members(POOL_MIN_IMAGES + 8)]
    write_packs(tmp_path, members)
    read_bytes(tmp_path / members[0][0])            # tables held here before the workers start
    stats = measure_all([str(tmp_path / name) for name, _ in members], 32, workers=2)
    assert [s.error for s in stats] == [None] * len(members)
    assert [(s.width, s.height) for s in stats] == [(8, 6)] * len(members)
