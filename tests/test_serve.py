"""The classify HTTP API: multipart field 'img' or a raw body, labels in checkpoint order."""
from __future__ import annotations

import io
import threading

import httpx
import pytest
import torch
from PIL import Image

from stages.shared.checkpoint import save_checkpoint
from stages.families.classifier.core import ClassifierConfig, build_model
from stages.common.schema import to_dict
from stages.tools.serve import Predictor, make_server


@pytest.fixture
def server(tmp_path):
    cfg = ClassifierConfig(widths=[4, 8], hidden=[8])
    torch.manual_seed(0)
    model = build_model(cfg, 3)
    # labels deliberately not in alphabetical order: the API must keep the checkpoint's
    save_checkpoint(tmp_path / "model.pt", {"model": model.state_dict(), "config": to_dict(cfg),
                                            "classes": ["vase", "bowl", "cup"], "epoch": 1, "image_size": 32})
    srv = make_server(Predictor(tmp_path / "model.pt"), max_bytes=100_000)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def png_bytes(size=(40, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 100, 50)).save(buf, format="PNG")
    return buf.getvalue()


def test_multipart_and_raw_body_agree(server):
    form = httpx.post(f"{server}/classify", files={"img": ("pot.png", png_bytes(), "image/png")}).json()
    raw = httpx.post(f"{server}/classify", content=png_bytes()).json()
    assert form["success"] and form == raw
    labels = [p["label"] for p in form["predictions"]]
    assert sorted(labels) == ["bowl", "cup", "vase"]
    assert abs(sum(p["probability"] for p in form["predictions"]) - 1) < 1e-4
    assert httpx.get(f"{server}/health").json()["classes"] == ["vase", "bowl", "cup"]


def test_bad_input_is_a_400_and_oversize_a_413(server):
    bad = httpx.post(f"{server}/classify", files={"img": ("x.jpg", b"<html>no</html>", "image/jpeg")})
    assert bad.status_code == 400 and bad.json()["success"] is False
    missing = httpx.post(f"{server}/classify", files={"other": ("x.png", png_bytes(), "image/png")})
    assert missing.status_code == 400 and "'img'" in missing.json()["error"]
    big = httpx.post(f"{server}/classify", content=b"\0" * 200_000)
    assert big.status_code == 413
