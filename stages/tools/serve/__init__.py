"""Serve a trained classifier over HTTP (FastAPI + uvicorn; the decathlon API's shape).

    kiln serve --model models/classifier/model.pt --port 8000
    curl -F img=@pot.jpg http://127.0.0.1:8000/classify

``POST /classify`` takes a multipart form field ``img`` (or the raw image as the body with an
image Content-Type) and answers ``{"success": true, "predictions": [{"label", "probability"}]}``,
most probable first (``?topk=N``, default 3; ``?cam=true`` adds a Grad-CAM overlay as a base64
PNG). ``POST /classify/batch`` takes several ``img`` fields and answers one result per file.
``GET /health``, ``GET /metadata`` (classes, arch, input size, preprocessing, the checkpoint's
training run), ``GET /docs`` (OpenAPI). Images are prepared exactly as ``kiln classify`` and
evaluate prepare them (``classify.read_image``). Concurrent requests share forward passes
(``--max-batch``, ``--max-wait-ms``). ``--backend onnx`` runs a ``kiln export`` .onnx file
through onnxruntime.

Every refusal is a 4xx ``{"success": false, "error": ...}``: a body over ``--max-bytes``
(declared or streamed), an image header over ``--max-pixels`` (refused before decoding), a
client stalled over ``--read-timeout`` seconds, a malformed request, a wrong method or path.

Modules: main (command line, socket, uvicorn), app (routes, errors), batcher (cross-request
batching), limits (size/time limits), protocol (uvicorn's h11 with header timeouts and JSON
errors), backends (torch, onnx), schemas (response shapes). Other pages join the same server
through ``create_app(..., routers=[router])`` or ``serve(args, routers=[router])``; ``--review``
mounts kiln review's page (stages/tools/review) at /review.
"""
from __future__ import annotations

import os
from pathlib import Path

# Idle OpenMP threads sleep rather than spin: passes come between decodes, and a spinning
# intra-op pool took ~60 ms of CPU per image from the decoders on 2 cores (10x the work).
# libgomp reads this when torch loads it, so it is set before anything here imports torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from stages.tools.review.router import review_router  # (after the environment)
from stages.tools.serve.main import parse_args, serve


def main(argv=None) -> None:
    args = parse_args(argv, __doc__.splitlines()[0])
    routers = []
    if args.review:   # the review page on the same server, with kiln review's defaults
        routers.append(review_router(Path.cwd()))
    serve(args, routers=routers)
