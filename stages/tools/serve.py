"""Serve a trained classifier over HTTP (the decathlon Flask API, on the standard library).

    python -m stages.tools.serve --model models/classifier/model.pt --port 8000
    curl -F img=@pot.png http://127.0.0.1:8000/classify

``POST /classify`` takes a multipart form field ``img`` (or the raw image as the
body) and answers ``{"success": true, "predictions": [{"label", "probability"}]}``
with labels in the checkpoint's training order. ``GET /health`` lists the classes.
Bad input answers 400 with ``{"success": false, "error": ...}``; bodies over
``--max-bytes`` answer 413 unread.
"""
from __future__ import annotations

import argparse
import io
import json
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from stages.common.errors import StageError, run_stage
from stages.families.classifier.core import load_classifier
from stages.shared.checkpoint import load_checkpoint
from stages.shared.images import load_rgb


class Predictor:
    """A classifier loaded once; predicts from encoded image bytes."""

    def __init__(self, checkpoint: Path, device: str = "cpu"):

        if not checkpoint.is_file():
            raise StageError(f"{checkpoint}: no trained classifier (run train@classifier first)")
        self.size = int(load_checkpoint(checkpoint).get("image_size", 64))
        self.model, self.classes, self.preprocess = load_classifier(checkpoint, device)
        self.device = device

    @torch.no_grad()
    def predict(self, data: bytes, topk: int = 3) -> list[dict]:
        image = torch.from_numpy(load_rgb(io.BytesIO(data), self.size)).permute(2, 0, 1)[None]  # (1,3,H,W)
        probs = F.softmax(self.model(self.preprocess(image.to(self.device))), dim=1)[0].cpu()
        top = probs.topk(min(topk, len(self.classes)))
        return [{"label": self.classes[i], "probability": round(p, 6)}
                for p, i in zip(top.values.tolist(), top.indices.tolist())]


def image_field(content_type: str, body: bytes) -> bytes:
    """The ``img`` part of a multipart form, or the body itself when it is not a form."""
    if not content_type.startswith("multipart/form-data"):
        return body
    message = BytesParser(policy=HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    for part in message.iter_parts():
        if part.get_param("name", header="content-disposition") == "img":
            return part.get_payload(decode=True)
    raise ValueError("multipart form has no field 'img'")


def make_handler(predictor: Predictor, max_bytes: int):
    class Handler(BaseHTTPRequestHandler):
        def reply(self, status: int, payload: dict) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):  # noqa: N802 (http.server's naming)
            if self.path == "/health":
                return self.reply(200, {"success": True, "classes": predictor.classes})
            self.reply(404, {"success": False, "error": "not found"})

        def do_POST(self):  # noqa: N802
            if self.path != "/classify":
                return self.reply(404, {"success": False, "error": "not found"})
            length = int(self.headers.get("Content-Length") or 0)
            if length > max_bytes:
                self.close_connection = True
                return self.reply(413, {"success": False, "error": f"body over {max_bytes} bytes"})
            body = self.rfile.read(length)
            try:
                data = image_field(self.headers.get("Content-Type", ""), body)
                predictions = predictor.predict(data)
            except (ValueError, OSError, UnidentifiedImageError, Image.DecompressionBombError) as err:
                return self.reply(400, {"success": False, "error": f"not a readable image ({err})"})
            self.reply(200, {"success": True, "predictions": predictions})

        def log_message(self, fmt, *args):  # one quiet line per request
            print(f"serve: {self.address_string()} {fmt % args}")

    return Handler


def make_server(predictor: Predictor, host: str = "127.0.0.1", port: int = 0,
                max_bytes: int = 20 << 20) -> ThreadingHTTPServer:
    return ThreadingHTTPServer((host, port), make_handler(predictor, max_bytes))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="kiln serve", description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("models/classifier/model.pt"))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--max-bytes", type=int, default=20 << 20)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    server = make_server(Predictor(args.model, args.device), args.host, args.port, args.max_bytes)
    print(f"serve: classifying on http://{args.host}:{server.server_address[1]}/classify")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    run_stage(main)
