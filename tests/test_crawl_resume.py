"""kill -9 the crawl at random moments, rerun it: the final set equals an uninterrupted run's."""
from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from crawl_fakes import make_corpus, write_params
from stages.shared.packs import list_members, read_bytes

REPO = Path(__file__).resolve().parents[1]


def crawl_cmd(tmp: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "stages.crawl.__main__", "--params", str(tmp / "params.yaml"),
            "--demo", str(tmp / "demo"), "--out", str(out), "--work", str(tmp / "work")]


def start(tmp: Path, out: Path) -> subprocess.Popen:
    # Our Chromium profiles go under a short TMPDIR (its sockets need short paths), so
    # the test can tell its own browsers from anyone else's.
    env = {**os.environ, "PYTHONPATH": str(REPO), "TMPDIR": (tmp / "t").read_text()}
    return subprocess.Popen(crawl_cmd(tmp, out), cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def final_set(out: Path) -> tuple[set, set]:
    """(class, sha256, source path) kept and (source path, reason) failed; ports stripped."""
    def path_of(url):
        return url.split("/", 3)[3] if url else None
    rows = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    fails = [json.loads(x) for x in (out / "failures.jsonl").read_text().splitlines()]
    return ({(r["class"], r["sha256"], path_of(r["source_url"])) for r in rows},
            {(path_of(f["source_url"]), f["reason"].replace(str(out), "OUT")) for f in fails})


def search_counts(out: Path) -> list[tuple]:
    """summary.json per search, without the page URL (its port differs between runs)."""
    searches = json.loads((out / "summary.json").read_text())["searches"]
    return [tuple(v for k, v in sorted(s.items()) if k != "page_url") for s in searches]


def assert_clean(out: Path, kept: set) -> None:
    """Only whole images named by their own hash, exactly the manifest's, no temp files."""
    files = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert {name for name in files if not name.endswith(".zip")} == {"manifest.jsonl", "failures.jsonl", "summary.json"}
    images = [Path(p).relative_to(out).as_posix() for p in list_members(out)]
    assert {(name.split("/")[0], Path(name).stem) for name in images} == {(c, s) for c, s, _ in kept}
    for name in images:
        assert hashlib.sha256(read_bytes(out / name)).hexdigest() == Path(name).stem
    assert not list(out.parent.glob(".raw.*"))   # no half-built directory left beside it


def our_chromium(tmp: Path) -> list[str]:
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    return [line for line in ps.splitlines() if (tmp / "t").read_text() in line]


@pytest.mark.browser
@pytest.mark.parametrize("browsers", [1, 2])    # 2: a kill can land while both sessions search
def test_sigkill_at_random_points_then_rerun(tmp_path, browsers):
    make_corpus(tmp_path / "demo", per_class=40)
    short_tmp = tempfile.mkdtemp(prefix="kc-", dir="/tmp")
    (tmp_path / "t").write_text(short_tmp)
    write_params(tmp_path / "params.yaml", {
        "queries": [{"term": "bowl", "class": "bowl", "count": 100},
                    {"term": "vase", "class": "vase", "count": 100}],
        "concurrency": 2, "per_host_concurrency": 2, "per_host_rate": 0, "backoff_s": 0.05, "browsers": browsers,
        "local": {"slow_fraction": 0.5, "slow_s": 0.15, "error_fraction": 0.05,
                  "flaky_fraction": 0.1, "redirect_fraction": 0.1, "wrong_type_fraction": 0.05}})
    began = time.monotonic()
    assert start(tmp_path, tmp_path / "clean").wait(timeout=120) == 0
    whole_run = time.monotonic() - began
    expected = final_set(tmp_path / "clean")

    out, rng, journaled = tmp_path / "raw", random.Random(3), []
    for _ in range(3):
        proc = start(tmp_path, out)
        time.sleep(rng.uniform(0.3, 0.9 * whole_run))
        proc.kill()   # SIGKILL: no handler, no cleanup
        proc.wait()
        journals = list((tmp_path / "work").glob("*/journal.jsonl"))
        journaled.append(sum(len(j.read_text().splitlines()) for j in journals))
        assert not out.exists() or final_set(out) == expected   # data/raw: absent or whole
        deadline = time.monotonic() + 10
        while our_chromium(tmp_path) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not our_chromium(tmp_path), "Chromium outlived the killed crawl"
    assert start(tmp_path, out).wait(timeout=120) == 0
    assert final_set(out) == expected
    assert search_counts(out) == search_counts(tmp_path / "clean")   # requested/found survive resume
    assert_clean(out, expected[0])
    assert max(journaled) > 0 or out.exists()   # some kill landed after work was journaled
    deadline = time.monotonic() + 10   # a watchdog may still be removing the last kill's profile
    while os.listdir(short_tmp) and time.monotonic() < deadline:
        time.sleep(0.1)
    os.rmdir(short_tmp)   # empty: every profile was removed, by the crawl or by its watchdog
