"""crawl: python -m stages.crawl --out data/raw [--work .kiln/crawl] [--demo DIR].

Searches every ``crawl.queries`` term with headless Chromium on ``crawl.engine`` (by
default the embedded local site over the demo corpus, which the crawl renders into
--work itself; --demo DIR serves one ``python -m stages.demo`` wrote instead), or
ingests a folder (``engine: folder``), downloads the full-size images
safely, and writes data/raw/<class>/<xx>.zip (image packs, stages/shared/packs.py), data/raw/manifest.jsonl,
data/raw/failures.jsonl and data/raw/summary.json (per search: found of requested; a
search that found fewer than its count also prints one warning line). Progress is
journaled under --work, outside DVC outputs, so a killed crawl resumes where it
stopped; the journal is removed once data/raw is whole.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import queue
import shutil
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from stages.common.errors import StageError, run_stage
from stages.common.params import Base, read_params
from stages.common.schema import ParamsError, to_dict
from stages.crawl.config import Crawl, EngineDef
from stages.crawl.demo_corpus import corpus_identity, ensure_corpus
from stages.crawl.engines import FOLDER, LOCAL, resolve_engine, search_url
from stages.crawl.engines.browser import collect, find_chromium, open_browser
from stages.crawl.fetch.assemble import collect_outcome, write_raw
from stages.crawl.fetch.download import Downloader, FetchConfig
from stages.crawl.fetch.images import Limits
from stages.crawl.fetch.journal import Journal, search_key, work_dir
from stages.crawl.fetch.pipeline import folder_fetcher, run_jobs
from stages.crawl.fetch.safety import Policy, UnsafeURL, check_url
from stages.crawl.folder import folder_searches
from stages.crawl.local_site import LocalSite
from stages.demo.config import Demo, check_demo_classes

# Knobs that change speed, not which images a crawl finds: a resumed run may differ in them.
SPEED_KNOBS = ("concurrency", "per_host_concurrency", "per_host_rate", "scroll_wait_s",
               "page_load_timeout_s", "load_images", "browsers")


# Items in progress per request slot: the others wait out backoffs or decode meanwhile.
ITEMS_PER_SLOT = 4


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="kiln crawl", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("data/raw"))
    parser.add_argument("--demo", type=Path, default=None,
                        help="serve this corpus (python -m stages.demo --out DIR) instead of rendering one")
    parser.add_argument("--work", type=Path, default=Path(".kiln/crawl"), help="resume journal root")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    return parser.parse_args(argv)


def load_sections(path: Path, render_demo: bool) -> tuple[Base, Crawl, Demo | None]:
    """What crawl reads (base, crawl; demo when the local engine renders it), checked as
    strictly as the whole file. Another engine needs nothing of the demo: any classes do."""
    params_file = read_params(path)
    base, crawl = params_file.section("base", Base), params_file.section("crawl", Crawl)
    demo = None
    if crawl.engine == LOCAL and render_demo:
        try:   # before the queries: own classes under the default engine get the useful line
            check_demo_classes(base.classes, "crawl.engine local crawls the demo corpus, which has")
        except ParamsError as err:
            err.message += "; for your own classes set crawl.engine (folder, bing, ...)"
            raise params_file.located(err) from None
        demo = params_file.section("demo", Demo)
    for i, query in enumerate(crawl.queries if crawl.engine != FOLDER else []):   # a folder has no terms
        if query.cls not in base.classes:
            raise params_file.located(ParamsError(f"crawl.queries.{i}.class",
                                                  f"{query.cls!r} is not in base.classes ({', '.join(base.classes)})"))
    return base, crawl, demo


def fingerprint(base: Base, crawl: Crawl, engine: EngineDef | None, corpus: str | None) -> str:
    """What a resumed crawl must share with the killed one (``corpus``: corpus_identity)."""
    settings = {k: v for k, v in to_dict(crawl).items() if k not in SPEED_KNOBS}
    blob = {"crawl": settings, "classes": base.classes, "seed": base.seed,
            "engine": to_dict(engine) if engine else None}
    digest = hashlib.sha256(json.dumps(blob, sort_keys=True).encode())
    if corpus is not None:
        digest.update(corpus.encode())
    return digest.hexdigest()[:16]


def limits_of(crawl: Crawl) -> Limits:
    return Limits(tuple(crawl.allowed_types), crawl.max_pixels, crawl.min_side)


class UrlKeys:
    """Journal keys for URLs: the local site's origin (a new free port each run) becomes {origin}."""

    def __init__(self, origin: str = ""):
        self.origin = origin

    def key(self, url: str) -> str:
        if self.origin and url.startswith(self.origin + "/"):
            return "{origin}" + url[len(self.origin):]
        return url

    def expand(self, key: str) -> str:
        return self.origin + key[len("{origin}"):] if key.startswith("{origin}") else key


def _search(driver, engine: EngineDef, query, crawl: Crawl, keys: UrlKeys) -> dict:
    from selenium.common.exceptions import WebDriverException


    record = {"kind": "search", "term": query.term, "class": query.cls, "missing": 0, "error": None,
              "page_url": keys.key(search_url(engine, query.term, keys.origin)), "urls": [],
              "requested": query.count, "stopped": ""}
    try:
        found = collect(driver, engine, query.term, query.count, crawl, keys.origin)
    except WebDriverException as err:
        first = (err.msg or type(err).__name__).strip().splitlines()[0]
        return {**record, "error": f"search page failed: {first}", "stopped": "search page failed"}
    return {**record, "missing": found.missing, "urls": [keys.key(u) for u in found.urls],
            "stopped": found.stopped}


def _browse(todo: queue.SimpleQueue, stop: threading.Event, record, engine: EngineDef, crawl: Crawl,
            keys: UrlKeys) -> None:
    """One browser session: search pending terms until none is left or another session failed."""
    try:
        with open_browser(crawl) as driver:
            while not stop.is_set():
                try:
                    query = todo.get_nowait()
                except queue.Empty:
                    return
                record(_search(driver, engine, query, crawl, keys))
    except BaseException:
        stop.set()           # the other sessions stop after their current term
        raise


def search_all(journal: Journal, engine: EngineDef, crawl: Crawl, keys: UrlKeys) -> None:
    """Run the searches the journal does not hold yet on up to ``crawl.browsers`` browsers at
    once, each taking the next pending term (no browser at all if none)."""
    from tqdm import tqdm

    pending = [q for q in crawl.queries if (q.term, q.cls) not in journal.searches]
    if not pending:
        return
    todo: queue.SimpleQueue = queue.SimpleQueue()
    for query in pending:
        todo.put(query)
    lock, stop = threading.Lock(), threading.Event()
    sessions = min(crawl.browsers, len(pending))
    find_chromium()   # a missing browser is one error line, before any progress bar
    with tqdm(total=len(pending), desc="search", unit="query") as bar:
        def record(search: dict) -> None:
            with lock:       # one writer at a time on the journal
                journal.append(search)
                bar.update(1)

        if sessions == 1:
            _browse(todo, stop, record, engine, crawl, keys)
            return
        with ThreadPoolExecutor(sessions, thread_name_prefix="browser") as pool:
            for running in [pool.submit(_browse, todo, stop, record, engine, crawl, keys) for _ in range(sessions)]:
                running.result()


def pending_jobs(journal: Journal, keys: UrlKeys) -> list[tuple[str, str]]:
    """(key, url) of every found result not downloaded yet, first-found order."""
    wanted = dict.fromkeys(k for s in journal.searches.values() for k in s["urls"])
    return [(k, keys.expand(k)) for k in wanted if k not in journal.items]


async def download_all(jobs, crawl: Crawl, policy: Policy, journal: Journal, keys: UrlKeys) -> None:
    limits = limits_of(crawl)
    downloader = Downloader(FetchConfig.from_params(crawl), policy, limits)
    try:
        await run_jobs(jobs, downloader.fetch, journal, limits, ITEMS_PER_SLOT * crawl.concurrency, keys.key)
    finally:
        await downloader.aclose()


def crawl_web(journal: Journal, engine: EngineDef, crawl: Crawl, base: Base, corpus: Path | None) -> UrlKeys:
    """Search, then download; the local engine's site (serving ``corpus``) runs for the duration."""
    with contextlib.ExitStack() as stack:
        if crawl.engine == LOCAL:
            terms = {q.term: q.cls for q in crawl.queries}
            keys = UrlKeys(stack.enter_context(LocalSite(corpus, terms, crawl.local, base.seed)))
            policy = Policy(allow_private=True)
        else:
            keys, policy = UrlKeys(), Policy(trusted_hosts=frozenset(engine.trusted_hosts))
            try:   # the browser follows the engine's own redirects; its start must be safe
                check_url(search_url(engine, "kiln"), policy)
            except UnsafeURL as err:
                raise StageError(f"crawl.engine {crawl.engine!r}: search_url refused: {err}") from None
        search_all(journal, engine, crawl, keys)
        asyncio.run(download_all(pending_jobs(journal, keys), crawl, policy, journal, keys))
    return keys


def crawl_folder(journal: Journal, crawl: Crawl, base: Base) -> list[tuple]:
    """engine: folder -> every file of <folder>/[<split>/]<class>/, validated like a download;
    returns the searches' keys in the order their rows are assembled."""
    records = folder_searches(Path(crawl.folder), base.classes)
    for record in records:
        if search_key(record) not in journal.searches:   # a resumed run keeps its first listing
            journal.append(record)
    jobs = pending_jobs(journal, UrlKeys())
    limits = limits_of(crawl)
    asyncio.run(run_jobs(jobs, folder_fetcher(crawl.max_bytes, limits), journal, limits, crawl.concurrency))
    return [search_key(record) for record in records]


def summary(outcome, seconds: float) -> str:
    per_class = ", ".join(f"{c} {n}" for c, n in sorted(Counter(r["class"] for r in outcome.rows).items()))
    splits = Counter(r["split"] for r in outcome.rows if "split" in r)
    if splits:   # a folder source with its own train/ val/ test/ trees
        per_class += "; " + ", ".join(f"{s} {splits[s]}" for s in ("train", "val", "test") if s in splits)
    reasons = outcome.reasons()
    duplicates = reasons.pop("duplicate", 0)
    failed = ", ".join(f"{r} {n}" for r, n in reasons.most_common())
    rate = len(outcome.rows) / seconds if seconds > 0 else 0.0
    short = sum(s["short"] for s in outcome.searches)
    shortfall = f", {short} of {len(outcome.searches)} searches short of their count" if short else ""
    return (f"crawl: kept {len(outcome.rows)} images ({per_class or 'none'}), "
            f"{duplicates} duplicates, {sum(reasons.values())} failed ({failed or 'none'}){shortfall} "
            f"in {seconds:.1f}s ({rate:.0f} images/s)")


def short_search_warnings(outcome) -> list[str]:
    """One line per search that found fewer results than its ``count`` asked for."""
    lines = []
    for search in outcome.searches:
        if search["requested"] is None or search["found"] >= search["requested"]:
            continue
        why = f" ({search['stopped']})" if search["stopped"] else ""
        lines.append(f"kiln: warning: crawl: term {search['term']!r} (class {search['class']}): "
                     f"found {search['found']} of {search['requested']} requested on "
                     f"{search['engine']}{why}")
    return lines


def main(argv=None) -> None:
    args = parse_args(argv)
    started = time.monotonic()
    base, crawl, demo = load_sections(args.params, render_demo=args.demo is None)
    engine = resolve_engine(crawl)
    corpus = corpus_identity(args.demo, demo) if crawl.engine == LOCAL else None
    workdir = work_dir(args.work, fingerprint(base, crawl, engine, corpus))
    journal = Journal(workdir)
    try:
        if crawl.engine == FOLDER:
            keys, searches = UrlKeys(), crawl_folder(journal, crawl, base)
        else:
            served = (args.demo or ensure_corpus(workdir, base, demo)) if crawl.engine == LOCAL else None
            keys = crawl_web(journal, engine, crawl, base, served)
            searches = list(dict.fromkeys((q.term, q.cls) for q in crawl.queries))
        outcome = collect_outcome(journal, searches, crawl.engine, args.out, keys.expand)
        write_raw(outcome, args.out, base.classes)
    finally:
        journal.close()
    shutil.rmtree(workdir, ignore_errors=True)   # data/raw is whole: nothing left to resume
    for line in short_search_warnings(outcome):
        print(line, file=sys.stderr)
    print(summary(outcome, time.monotonic() - started))


if __name__ == "__main__":
    run_stage(main)
