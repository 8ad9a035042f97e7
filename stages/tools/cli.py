"""The ``kiln`` command: ``kiln <stage> [args]`` runs a stage exactly as dvc.yaml does.

    kiln split --input data/filtered/manifest.jsonl --out data/split
    kiln train classifier --train data/augmented/train.pt --val data/split/val.pt
    kiln generate dcgan --help
"""
from __future__ import annotations

import importlib
import sys

from stages.common.errors import run_stage

# command -> module with a main(argv); the chain's stages in order, then the tools, for --help.
COMMANDS = {
    "params": "stages.params.__main__",
    "crawl": "stages.crawl.__main__",
    "filter": "stages.filter.__main__",
    "split": "stages.split.__main__",
    "augment": "stages.augment.__main__",
    "hpo": "stages.hpo.__main__",
    "train": "stages.train.__main__",
    "evaluate": "stages.evaluate.__main__",
    "uses": "stages.evaluate.uses",   # which models each evaluate@<family> reads (its dvc dep)
    "demo": "stages.demo.__main__",   # the corpus alone; the crawl renders its own (engine: local)
    "serve": "stages.tools.serve",
    "generate": "stages.tools.generate",
    "classify": "stages.tools.classify",
    "export": "stages.tools.export",
    "review": "stages.tools.review.__main__",   # keep/reject crawled images into a filter's labels.folder
    "sweep": "stages.tools.sweep",   # queue hpo's next points as dvc experiments (dvc queue start)
}


def usage() -> str:
    return "usage: kiln {" + ",".join(COMMANDS) + "} [args...]\n" + (__doc__ or "")


def main(argv: list[str] | None = None) -> None:

    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"kiln: error: unknown command {command!r}; one of: {', '.join(COMMANDS)}", file=sys.stderr)
        sys.exit(2)
    module = importlib.import_module(COMMANDS[command])
    run_stage(module.main, rest)


if __name__ == "__main__":
    main()
