"""The command line: load the model once, bind the port, run uvicorn with the guarded protocol."""
from __future__ import annotations

import argparse
import os
import socket
import warnings
from pathlib import Path

from stages.common.errors import StageError
from stages.tools.serve.limits import Limits

BACKLOG = 2048     # pending connections (the old server's 5 reset 200 clients at once)
DEFAULT_MODEL = {"torch": Path("models/classifier/model.pt"), "onnx": Path("exports/classifier.onnx")}


def parse_args(argv, doc: str) -> argparse.Namespace:
    cores = len(os.sched_getaffinity(0))
    defaults = Limits()
    parser = argparse.ArgumentParser(prog="kiln serve", description=doc)
    parser.add_argument("--model", type=Path, help="a classifier checkpoint (--backend torch, default "
                        f"{DEFAULT_MODEL['torch']}) or a kiln export .onnx (default {DEFAULT_MODEL['onnx']})")
    parser.add_argument("--backend", choices=("torch", "onnx"), default="torch")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="0: any free port (printed)")
    parser.add_argument("--device", default="cpu", help="torch device (--backend torch)")
    add = parser.add_argument
    add("--max-batch", type=int, default=32, help="images per forward pass, at most")
    add("--max-wait-ms", type=float, default=2.0, help="how long a pass waits for more images when fewer are queued")
    add("--threads", type=int, default=cores, help="threads of the forward pass (default: the cores)")
    add("--decode-threads", type=int, default=cores, help="threads decoding images (default: the cores)")
    add("--max-bytes", type=int, default=defaults.max_bytes, help="request body limit")
    add("--max-pixels", type=int, default=defaults.max_pixels, help="refuse images whose header claims more")
    add("--max-files", type=int, default=defaults.max_files, help="images per /classify/batch request")
    add("--read-timeout", type=float, default=defaults.read_timeout, help="seconds a client may stall")
    add("--body-timeout", type=float, default=defaults.body_timeout, help="seconds a whole body may take")
    add("--max-active", type=int, default=defaults.max_active, help="requests in flight before 503")
    add("--access-log", action="store_true", help="one line per request on stdout")
    add("--review", action="store_true", help="also serve kiln review's page at /review (needs the crawl, "
        "data/raw/manifest.jsonl; kiln review --help for its own options)")
    args = parser.parse_args(argv)
    for name in ("max_batch", "threads", "decode_threads", "max_bytes", "max_pixels", "max_files", "max_active"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    for name in ("max_wait_ms", "read_timeout", "body_timeout"):
        if not getattr(args, name) >= 0 or (name != "max_wait_ms" and getattr(args, name) == 0):
            parser.error(f"--{name.replace('_', '-')} must be positive")
    if not 0 <= args.port <= 65535:
        parser.error("--port must be 0..65535")
    args.model = args.model or DEFAULT_MODEL[args.backend]
    return args


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound before the model loads (a busy port fails fast, in one line)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as err:
        raise StageError(f"--host {host}: cannot resolve ({err.strerror})") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)   # restart over TIME_WAIT; a live server still fails
    try:
        sock.bind(address)
    except OSError as err:
        sock.close()
        hint = " (another server is running there? pick another --port)" if err.errno == 98 else ""
        raise StageError(f"cannot listen on {host}:{port}: {err.strerror}{hint}") from None
    sock.listen(BACKLOG)    # connections queue from now on, before uvicorn's loop accepts them
    return sock


def serve(args: argparse.Namespace, routers=()) -> None:
    import torch
    import uvicorn
    from PIL import Image

    from stages.tools.serve.app import create_app
    from stages.tools.serve.backends import load_backend
    from stages.tools.serve.protocol import guarded_protocol

    warnings.simplefilter("ignore", Image.DecompressionBombWarning)   # --max-pixels is checked first
    torch.set_num_threads(args.threads)
    sock = bind(args.host, args.port)
    backend = load_backend(args.backend, args.model, args.device, args.threads)
    limits = Limits(args.max_bytes, args.max_pixels, args.max_files, args.read_timeout,
                    args.body_timeout, args.max_active)
    app = create_app(backend, limits, max_batch=args.max_batch, max_wait_ms=args.max_wait_ms,
                     decode_threads=args.decode_threads, routers=routers)
    config = uvicorn.Config(app, http=guarded_protocol(args.read_timeout), lifespan="on", backlog=BACKLOG,
                            log_level="warning", access_log=args.access_log, timeout_keep_alive=5,
                            timeout_graceful_shutdown=3)
    host, port = sock.getsockname()[:2]
    print(f"serve: {args.backend} backend, {len(backend.classes)} classes; classifying on "
          f"http://{args.host}:{port}/classify (API docs: /docs)", flush=True)
    uvicorn.Server(config).run(sockets=[sock])
