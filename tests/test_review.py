"""kiln review: the order, the label files, the HTTP refusals, and the page in real headless Chromium
feeding the filter stage."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import numpy as np
import pytest
import yaml
from conftest import stage_env
from test_filter_stage import TINY_FILTER, build_corpus, write_params

from stages.filter.ensemble import VOTE_MODES, vote
from stages.shared.packs import packed_path, read_bytes
from stages.tools.review.decisions import CrawledImage, LabelFolder, ReviewError
from stages.tools.review.queue import review_order
from stages.tools.review.scores import Scores, vote_score
from stages.tools.review.target import choose_target

FOLDER = "labels/object"


def tiny_repo(root: Path, folder: str | None = FOLDER, demo_labels: bool = False) -> list[dict]:
    """data/raw as the crawl writes it (54 rows: pots, distractors, junk) and a params.yaml whose
    object filter reads ``folder`` (and, with demo_labels, the ground truth the rows carry)."""
    build_corpus(root)
    labels = {"folder": folder, "demo": {"keep": ["pot"] if demo_labels else [],
                                         "reject": ["distractor"] if demo_labels else []}}
    section = {**TINY_FILTER, "filters": {"object": {**TINY_FILTER["filters"]["object"], "labels": labels}}}
    write_params(root, section)
    return [json.loads(line) for line in (root / "data/raw/manifest.jsonl").read_text().splitlines()]


def crawled(root: Path, row: dict) -> CrawledImage:
    return CrawledImage(row["sha256"], row["class"], root / row["path"])


def label_files(folder: Path) -> dict[str, list[str]]:
    """side -> sorted '<class>/<name>' of every file under folder/side."""
    return {side: sorted(p.relative_to(folder / side).as_posix() for p in (folder / side).rglob("*") if p.is_file())
            for side in ("keep", "reject") if (folder / side).is_dir()}


def expected_files(keep: list[str], reject: list[str], cls: str = "bowl") -> dict[str, list[str]]:
    return {"keep": sorted(f"{cls}/{sha}.png" for sha in keep), "reject": sorted(f"{cls}/{sha}.png" for sha in reject)}


# --- order ------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", VOTE_MODES)
def test_vote_score_thresholds_exactly_as_the_filter_votes(mode):
    rng = np.random.default_rng(0)
    for members in (1, 2, 3, 4, 5):
        probs = rng.uniform(size=(members, 400))
        for threshold in (0.3, 0.5, 0.9):
            assert np.array_equal(vote_score(probs, mode) >= threshold, vote(probs, mode, threshold))


def test_order_is_least_sure_first_per_class_and_crawl_order_without_an_ensemble():
    rows = [{"class": c, "sha256": str(i), "path": f"{i}.png"} for i, c in enumerate("aabab")]
    assert review_order(rows, None) == {"a": [0, 1, 3], "b": [2, 4]}
    # threshold 0.9: margins 0.5, 0.01, nan, 0.05, 0.01 -> unscored last, ties in crawl order
    scores = Scores(np.array([0.4, 0.91, np.nan, 0.85, 0.89]), threshold=0.9, vote="all", model="m.pt")
    assert review_order(rows, scores) == {"a": [1, 3, 0], "b": [4, 2]}


def test_scores_are_the_filters_own_and_a_damaged_checkpoint_falls_back_to_crawl_order(tmp_path, monkeypatch):
    from test_filter_stage import ARGS

    from stages.filter.__main__ import main as filter_main
    from stages.tools.review.scores import ScoreCache

    rows = tiny_repo(tmp_path, folder=None, demo_labels=True)
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    # strict, so the ensemble rejects some rows: the stage writes member probabilities only for those
    params["filter"]["filters"]["object"]["threshold"] = 0.99
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    filter_main(ARGS)
    cache = ScoreCache(rows, tmp_path, tmp_path / "models/filter/object.pt", device="cpu")
    scores = cache.get()
    index = {row["sha256"]: i for i, row in enumerate(rows)}
    rejected = [json.loads(line) for line in Path("data/filtered/rejected.jsonl").read_text().splitlines()]
    probs_written = [(index[r["sha256"]], r["filter_probs"]["object"]) for r in rejected if "filter_probs" in r]
    assert probs_written                                  # the stage scored (and rejected) some rows
    for i, probs in probs_written:                        # vote all: the lowest member; rounded to 4 places there
        assert abs(scores.values[i] - min(probs)) <= 5e-5
    kept = [index[json.loads(line)["sha256"]] for line in Path("data/filtered/manifest.jsonl").read_text().splitlines()]
    assert (scores.values[kept] >= scores.threshold).all()

    (tmp_path / "models/filter/object.pt").write_bytes(b"not a checkpoint")
    assert cache.get() is None and "cannot score with" in cache.error
    assert review_order(rows, cache.get())["bowl"] == [i for i, r in enumerate(rows) if r["class"] == "bowl"]


# --- label files ------------------------------------------------------------------------
def test_decisions_copy_move_and_take_back_without_duplicates(tmp_path):
    rows = tiny_repo(tmp_path)
    folder, image = tmp_path / FOLDER, crawled(tmp_path, rows[0])
    labels = LabelFolder(folder, tmp_path / "data/raw")
    name = f"{rows[0]['class']}/{rows[0]['sha256']}.png"

    kept = labels.decide(image, "keep")
    assert label_files(folder) == {"keep": [name], "reject": []}          # both sides exist: the filter needs them
    assert kept.read_bytes() == read_bytes(image.path)                     # the packed image's bytes
    assert kept.is_file() and not kept.is_symlink()                        # a plain file a person can open
    labels.decide(image, "reject")
    assert label_files(folder) == {"keep": [], "reject": [name]}
    assert labels.decision(rows[0]["sha256"]) == "reject"
    labels.decide(image, "none")
    assert label_files(folder) == {"keep": [], "reject": []}
    assert labels.decision(rows[0]["sha256"]) is None
    assert not list(folder.rglob(".*"))                                    # no temp file left behind


def test_a_folder_curated_by_hand_is_read_and_its_conflicts_moved(tmp_path):
    rows = tiny_repo(tmp_path)
    folder = tmp_path / FOLDER
    (folder / "reject").mkdir(parents=True)
    (folder / "keep").mkdir()
    (folder / "reject" / "my name.png").write_bytes(read_bytes(tmp_path / rows[1]["path"]))   # same bytes, own name
    labels = LabelFolder(folder, tmp_path / "data/raw")
    assert labels.decision(rows[1]["sha256"]) == "reject"
    assert labels.counts({r["sha256"]: r["class"] for r in rows})["bowl"] == {"keep": 0, "reject": 1}
    labels.decide(crawled(tmp_path, rows[1]), "keep")
    assert label_files(folder) == {"keep": [f"bowl/{rows[1]['sha256']}.png"], "reject": []}


def test_writer_refuses_paths_outside_the_crawl_and_the_folder(tmp_path):
    rows = tiny_repo(tmp_path)
    folder = tmp_path / FOLDER
    labels = LabelFolder(folder, tmp_path / "data/raw")
    secret = tmp_path / "secret.png"
    secret.write_bytes(read_bytes(tmp_path / rows[0]["path"]))
    good = crawled(tmp_path, rows[0])
    hostile = {
        "outside the crawl": CrawledImage(good.sha256, "bowl", tmp_path / "data/raw/../secret.png"),
        "class climbing out": CrawledImage(good.sha256, "../../../escaped", good.path),
        "class that is a path": CrawledImage(good.sha256, "bowl/../../x", good.path),
        "name that is no sha": CrawledImage("../../escaped", "bowl", good.path),
    }
    for what, image in hostile.items():
        with pytest.raises(ReviewError) as err:
            labels.decide(image, "keep")
        assert 400 <= err.value.status < 500, what
    with pytest.raises(ReviewError, match="decision must be one of keep, reject, none"):
        labels.decide(good, "maybe")
    assert not folder.exists()                                            # nothing written anywhere
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "params.yaml", "secret.png"]


def test_target_says_which_folder_and_which_key_when_params_has_none(tmp_path):
    tiny_repo(tmp_path, folder=None)
    target = choose_target(Path("params.yaml"), tmp_path)
    assert (target.filter_name, target.folder, target.configured) == ("object", tmp_path / FOLDER, False)
    assert target.note() == ("filter.filters.object.labels.folder is null in params.yaml: decisions are saved in "
                             "labels/object, which the filter reads once params.yaml sets "
                             "`filter.filters.object.labels.folder: labels/object`")
    assert choose_target(Path("params.yaml"), tmp_path, folder="mine").folder_text == "mine"
    tiny_repo(tmp_path / "set")
    assert choose_target(Path("params.yaml"), tmp_path / "set").note() is None


# --- HTTP -------------------------------------------------------------------------------
def test_bad_requests_get_a_4xx_json_with_a_message(tmp_path):
    from fastapi.testclient import TestClient

    from stages.tools.review.__main__ import make_app
    from stages.tools.review.session import ReviewSession

    rows = tiny_repo(tmp_path)
    manifest = tmp_path / "data/raw/manifest.jsonl"
    outside = {**rows[0], "sha256": "f" * 64, "path": "data/raw/../../etc/passwd"}
    manifest.write_text(manifest.read_text() + json.dumps(outside) + "\n")
    client = TestClient(make_app(ReviewSession(tmp_path, device="cpu")))
    sha = rows[0]["sha256"]

    def post(body):
        raw = body if isinstance(body, (str, bytes)) else json.dumps(body)
        return client.post("/review/api/decisions", content=raw)

    cases = {
        "not JSON": (post("{nope"), 400, "body must be JSON"),
        "a list": (post([1, 2]), 400, "JSON object"),
        "bad decision": (post({"id": sha, "decision": "maybe"}), 400, "decision must be one of"),
        "bad id": (post({"id": "../../etc/passwd", "decision": "keep"}), 400, "64 hex digits"),
        "unknown id": (post({"id": "0" * 64, "decision": "keep"}), 404, "no crawled image"),
        "outside the crawl": (post({"id": "f" * 64, "decision": "keep"}), 403, "not an image of the crawl"),
        "huge body": (post(b"{" + b" " * 100_000 + b"}"), 413, "small JSON object"),
        "image outside": (client.get("/review/api/image/" + "f" * 64), 403, "outside the crawl"),
        "image not by id": (client.get("/review/api/image/..%5Cparams.yaml"), 400, "64 hex digits"),
        "image traversal": (client.get("/review/api/image/..%2F..%2Fparams.yaml"), 404, "Not Found"),
        "unknown class": (client.get("/review/api/queue/teapot"), 404, "no crawled class 'teapot'"),
        "unknown asset": (client.get("/review/static/session.py"), 404, "no asset 'session.py'"),
        "asset traversal": (client.get("/review/static/..%2F..%2Fsession.py"), 404, "Not Found"),
    }
    for what, (response, status, message) in cases.items():
        assert response.status_code == status, what
        assert message in response.json()["detail"], what
    assert not (tmp_path / FOLDER).exists()
    shown = client.get("/review/api/image/" + sha)                       # read out of its pack
    assert shown.status_code == 200 and shown.headers["content-type"] == "image/png"
    assert shown.content == read_bytes(tmp_path / rows[0]["path"])
    ok = post({"id": sha, "decision": "keep"})
    assert ok.status_code == 200 and ok.json()["file"] == f"{FOLDER}/keep/bowl/{sha}.png"
    assert ok.json()["counts"]["bowl"] == {"total": 28, "reviewed": 1, "kept": 1, "rejected": 0}
    (tmp_path / rows[1]["path"]).parent.unlink()                          # its pack gone
    gone = client.get("/review/api/image/" + rows[1]["sha256"])
    assert gone.status_code == 404 and "the crawled file is gone" in gone.json()["detail"]


# --- the page, in real Chromium, feeding the filter stage -------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_review(root: Path, port: int) -> subprocess.Popen:
    """`kiln review` as a person runs it (from the repo root), once it answers."""
    proc = subprocess.Popen([sys.executable, "-m", "stages.tools.review", "--port", str(port), "--device", "cpu"],
                            cwd=root, env=stage_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/review/api/state", timeout=5).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.3)
    proc.kill()
    raise AssertionError(f"kiln review did not start: {proc.communicate()[0]}")


def run_filter(root: Path) -> dict:
    """The filter stage exactly as dvc.yaml runs it; returns metrics/filter.json."""
    cmd = ("python -m stages.filter --input data/raw/manifest.jsonl --out data/filtered --models models/filter "
           "--metrics metrics/filter.json --sheets metrics/filter")
    done = subprocess.run(cmd.split(), check=False, cwd=root, env=stage_env(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads((root / "metrics/filter.json").read_text())


class Page:
    """The review page in a browser: what is on screen, and a person's actions."""

    def __init__(self, driver):
        self.driver = driver

    def open(self, url: str) -> None:
        from selenium.webdriver.support.ui import WebDriverWait

        self.driver.get(url)
        WebDriverWait(self.driver, 60).until(lambda d: d.execute_script("return document.body.dataset.ready"))

    def current(self) -> str:
        return self.driver.execute_script("return document.getElementById('current').src").rsplit("/", 1)[-1]

    def text(self, element_id: str) -> str:
        return self.driver.execute_script(f"return document.getElementById('{element_id}').textContent")

    def act(self, action) -> str:
        """Do ``action`` to the image on screen; wait until the page has moved on. Returns that image's id."""
        from selenium.webdriver.support.ui import WebDriverWait

        shown, before = self.current(), self.text("status")
        action()
        WebDriverWait(self.driver, 20).until(lambda d: self.text("status") != before and self.current() != shown)
        return shown

    def click(self, element_id: str) -> None:
        from selenium.webdriver.common.by import By

        self.driver.find_element(By.ID, element_id).click()

    def key(self, key: str) -> None:
        from selenium.webdriver.common.action_chains import ActionChains

        ActionChains(self.driver).send_keys(key).perform()


@pytest.mark.browser
def test_page_in_chromium_writes_labels_the_filter_then_trains_on(tmp_path):
    from stages.crawl.engines.browser import open_browser

    rows = tiny_repo(tmp_path)                      # labels.folder set, no demo labels: only the person's
    port, folder = free_port(), tmp_path / FOLDER
    server = start_review(tmp_path, port)
    url = f"http://127.0.0.1:{port}/review"
    browser = SimpleNamespace(user_agent="kiln-review-test", load_images=True, page_load_timeout_s=30)
    bowls = [r["sha256"] for r in rows if r["class"] == "bowl"]
    try:
        with open_browser(browser) as driver:
            page = Page(driver)
            page.open(url)
            assert "No trained ensemble to order by" in page.text("order")       # no filter run yet
            assert page.current() == bowls[0]                                      # crawl order
            first = page.act(lambda: page.click("keep"))
            second = page.act(lambda: page.click("reject"))
            third = page.act(lambda: page.key("k"))
            fourth = page.act(lambda: page.key("r"))
            assert [first, second, third, fourth] == bowls[:4]
            assert label_files(folder) == expected_files(keep=[first, third], reject=[second, fourth])

            page.act(lambda: page.key("u"))                   # undo: the fourth is back on screen, unlabelled
            assert page.current() == fourth and f"bowl/{fourth}.png" not in label_files(folder)["reject"]
            page.act(lambda: page.key("k"))                   # ... and kept this time
            driver.find_element("css selector", f"#history li[data-id='{first}']").click()
            assert page.current() == first                    # a recent decision, back to change it
            page.act(lambda: page.click("reject"))
            assert label_files(folder) == expected_files(keep=[third, fourth], reject=[first, second])
            assert "4/27 reviewed · 2 kept · 2 rejected" in page.text("classes")
            for sha in (first, second, third, fourth):        # the bytes the filter links to the crawl row
                side = "keep" if sha in (third, fourth) else "reject"
                copy = folder / side / "bowl" / f"{sha}.png"
                assert copy.read_bytes() == read_bytes(packed_path(tmp_path / "data/raw", "bowl", sha, "png"))

            metrics = run_filter(tmp_path)["filters"]["object"]
            assert metrics["n_train"] + metrics["heldout"]["n"] == 4   # the four decisions, and nothing else

            page.open(url)                                    # the retrained ensemble now orders the queue
            assert "Least sure first: ordered by models/filter/object.pt" in page.text("order")
            state = httpx.get(f"{url}/api/state").json()
            queue = httpx.get(f"{url}/api/queue/bowl").json()["items"]
            open_items = [i for i in queue if i["decision"] is None]
            margins = [abs(i["score"] - state["threshold"]) for i in open_items]
            assert margins == sorted(margins) and page.current() == open_items[0]["id"]
            assert "ensemble score" in page.text("caption")
            assert "trained on 4" in page.text("heldout")
    finally:
        server.terminate()
        output = server.communicate(timeout=30)[0]
    assert f"decisions for filter 'object' go to {FOLDER}/keep and {FOLDER}/reject" in output
    assert "Traceback" not in output


def test_kiln_serve_review_serves_the_page_beside_the_classifier(tmp_path):
    """`kiln serve --review`: one server, /classify and /review, from the repo root."""
    import torch

    from stages.common.schema import to_dict
    from stages.families.classifier.core import ClassifierConfig, build_model
    from stages.shared.checkpoint import save_checkpoint

    rows = tiny_repo(tmp_path)
    cfg = ClassifierConfig(widths=[4, 8], hidden=[8])
    save_checkpoint(tmp_path / "model.pt", {"family": "classifier", "model": build_model(cfg, 2).state_dict(),
                                            "config": to_dict(cfg), "classes": ["bowl", "vase"], "image_size": 32})
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "stages.tools.serve", "--review", "--model", "model.pt",
                             "--port", str(port)], cwd=tmp_path, env=stage_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline, state = time.monotonic() + 120, None
        while state is None and time.monotonic() < deadline and proc.poll() is None:
            try:
                state = httpx.get(f"http://127.0.0.1:{port}/review/api/state", timeout=5)
            except httpx.TransportError:
                time.sleep(0.3)
        assert state is not None and state.status_code == 200, proc.stdout.read() if proc.poll() is not None else ""
        image = read_bytes(tmp_path / rows[0]["path"])
        answer = httpx.post(f"http://127.0.0.1:{port}/classify", files={"img": ("x.png", image)}, timeout=30)
        assert answer.status_code == 200 and {p["label"] for p in answer.json()["predictions"]} == {"bowl", "vase"}
        page = httpx.get(f"http://127.0.0.1:{port}/review", timeout=10)
        assert page.status_code == 200 and "kiln review" in page.text
    finally:
        proc.kill()
        proc.wait()
