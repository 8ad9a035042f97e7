"""kiln review: keep or reject crawled images for a filter ensemble, on a page at http://127.0.0.1:8001/review

    kiln review [--port 8001] [--filter object] [--folder labels/object]

Serves the review page on http://127.0.0.1:<port>/review. Run from the repo root, after the
crawl (data/raw/manifest.jsonl); with a trained filter (models/filter/<name>.pt) the images
it is least sure of come first.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from stages.common.errors import run_stage
from stages.tools.review.router import routes_for
from stages.tools.review.session import ReviewSession


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="kiln review", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001, help="0: any free port (printed)")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--filter", dest="filter_name", metavar="NAME",
                        help="the filter to label for (default: the first of filter.cascade)")
    parser.add_argument("--folder", type=Path, help="where decisions go (default: the filter's labels.folder, "
                        "else labels/<filter>)")
    parser.add_argument("--raw", type=Path, default=Path("data/raw/manifest.jsonl"), help="the crawl's manifest")
    parser.add_argument("--models", type=Path, default=Path("models/filter"), help="the filter stage's --models")
    parser.add_argument("--metrics", type=Path, default=Path("metrics/filter.json"),
                        help="the filter stage's --metrics")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                        help="where the ensemble scores the crawl")
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        parser.error("--port must be 0..65535")
    return args


def make_app(session: ReviewSession):
    """The review on its own server: the page at /review, / sends a browser there."""
    from fastapi import FastAPI
    from fastapi.responses import RedirectResponse

    app = FastAPI(title="kiln review", docs_url="/review/docs", openapi_url="/review/openapi.json")
    app.include_router(routes_for(session))
    app.add_api_route("/", lambda: RedirectResponse("/review"), include_in_schema=False)
    return app


def opening_lines(session: ReviewSession) -> list[str]:
    """What the command says before serving: the folder, the params line to set, the order."""
    target, scores = session.target, session.scores.get()
    lines = [(f"review: {len(session.rows)} crawled images; decisions for filter {target.filter_name!r} go to "
              f"{target.folder_text}/keep and {target.folder_text}/reject")]
    if target.note():
        lines.append(f"review: {target.note()}")
    if scores is not None:
        lines.append(f"review: least sure first, by {session.relative(scores.model)} ({scores.vote} vote, "
                     f"threshold {scores.threshold})")
    else:
        why = session.scores.error or f"no trained filter at {session.relative(session.checkpoint)}"
        lines.append(f"review: {why}; crawl order")
    return lines


def main(argv=None) -> None:
    import uvicorn

    from stages.tools.serve.main import bind

    args = parse_args(argv)
    sock = bind(args.host, args.port)        # a busy port is one line, before the scoring
    session = ReviewSession(Path.cwd(), args.params, filter_name=args.filter_name, folder=args.folder,
                            raw_manifest=args.raw, models=args.models, metrics=args.metrics, device=args.device)
    for line in opening_lines(session):
        print(line, flush=True)
    port = sock.getsockname()[1]
    print(f"review: open http://{args.host}:{port}/review  (k keep, r reject, u undo; Ctrl+C stops)", flush=True)
    config = uvicorn.Config(make_app(session), log_level="warning", timeout_graceful_shutdown=3)
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    run_stage(main)
