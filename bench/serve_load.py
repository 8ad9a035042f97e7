"""Load test of kiln serve on loopback: latency and throughput for 1, 16 and 200 concurrent clients.

    python bench/serve_load.py --model models/classifier/model.pt [--image photo.jpg]
        [--servers torch,onnx,old] [--clients 1,16,200] [--requests 100,13,5]

Starts each server itself on 127.0.0.1 (a free port) in a subprocess, one after the other on
the same machine, model and payload, so the ratios are side by side:

  torch  kiln serve (FastAPI + uvicorn, cross-request batching), the eager checkpoint
  onnx   kiln serve --backend onnx, the checkpoint exported with kiln export to a temp file
  old    the stdlib server this replaced (``git show <--old-rev>:stages/tools/serve.py``), when
         the repository still has it in its history

Each client opens a fresh connection per request (as curl or requests.post do), posts the
image as the multipart field ``img`` and reads the whole answer; a request counts as an error
unless it answers 200 with ``"success": true`` within ``--timeout`` seconds (connection resets
count too). Prints per server and load: ok/sent, p50/p95 latency, images/s, images per forward
pass (kiln serve's /health), the server's CPU time per answered image (all its threads, from
/proc: the figure least moved by other work on a shared machine), then the ratios to ``old``;
the load average before and after says how busy the machine was. The default payload is scikit-learn's sample photo
china.jpg (640x427, a real photo shipped with a kiln dependency); ``--upscale N`` re-encodes it
with its longer side N px (a phone-photo-sized JPEG; still a photo's content).
"""
from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
BOUNDARY = "kilnbenchboundary"


# --- the payload ----------------------------------------------------------------------------
def default_photo() -> Path:
    import sklearn
    return Path(sklearn.__file__).parent / "datasets" / "images" / "china.jpg"


def payload(image: Path, upscale: int) -> tuple[bytes, str]:
    """(JPEG bytes, description) of the photo, re-encoded at ``upscale`` px when asked."""
    from PIL import Image
    data = image.read_bytes()
    with Image.open(io.BytesIO(data)) as img:
        size = img.size
        if upscale:
            scale = upscale / max(size)
            img = img.convert("RGB").resize((round(size[0] * scale), round(size[1] * scale)),
                                            Image.Resampling.LANCZOS)
            out = io.BytesIO()
            img.save(out, format="JPEG", quality=90)
            data, size = out.getvalue(), img.size
    return data, f"{image.name} {size[0]}x{size[1]} JPEG, {len(data) // 1024} KB"


def multipart_request(port: int, image: bytes) -> bytes:
    body = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"img\"; filename=\"photo.jpg\"\r\n"
            f"Content-Type: image/jpeg\r\n\r\n").encode() + image + f"\r\n--{BOUNDARY}--\r\n".encode()
    head = (f"POST /classify HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n"
            f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


# --- the clients -----------------------------------------------------------------------------
async def one_request(port: int, request: bytes, timeout: float) -> float | None:
    """Seconds from connect to the full answer, or None for an error."""
    start = time.perf_counter()
    writer = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request)
            await writer.drain()
            answer = await reader.read()          # Connection: close -> read to EOF
    except (OSError, asyncio.TimeoutError):
        return None
    finally:
        if writer is not None:
            writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.") or head.split()[1] != b"200":
        return None
    try:
        return time.perf_counter() - start if json.loads(body)["success"] is True else None
    except ValueError:
        return None


async def load(port: int, request: bytes, clients: int, each: int, timeout: float) -> dict:
    async def client() -> list:
        return [await one_request(port, request, timeout) for _ in range(each)]
    start = time.perf_counter()
    results = [t for batch in await asyncio.gather(*(client() for _ in range(clients))) for t in batch]
    wall = time.perf_counter() - start
    ok = np.array([t for t in results if t is not None]) * 1000
    return {"clients": clients, "sent": len(results), "ok": len(ok), "wall_s": wall,
            "p50_ms": float(np.percentile(ok, 50)) if len(ok) else None,
            "p95_ms": float(np.percentile(ok, 95)) if len(ok) else None,
            "images_per_s": len(ok) / wall}


# --- the servers -----------------------------------------------------------------------------
def start(command: list[str], log: Path, env: dict | None = None) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen(command, cwd=REPO, stdout=open(log, "w"), stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        found = re.search(r"classifying on http://[^:]+:(\d+)/", log.read_text())
        if found:
            return proc, int(found.group(1))
        if proc.poll() is not None:
            raise SystemExit(f"server exited {proc.returncode}: {log.read_text()[-2000:]}")
        time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"server did not start: {log.read_text()[-2000:]}")


def server_commands(names: list[str], model: Path, work: Path, old_rev: str) -> dict[str, list[str]]:
    serve = [sys.executable, "-m", "stages.tools.serve", "--port", "0"]
    commands = {}
    for name in names:
        if name == "torch":
            commands[name] = serve + ["--model", str(model)]
        elif name == "onnx":
            from stages.tools.export import export
            onnx_path = work / "model.onnx"
            export(model, onnx_path, "onnx")
            commands[name] = serve + ["--backend", "onnx", "--model", str(onnx_path)]
        elif name == "old":
            source = subprocess.run(["git", "show", f"{old_rev}:stages/tools/serve.py"], cwd=REPO,
                                    capture_output=True, text=True)
            if source.returncode != 0:
                print(f"old: not in the history at {old_rev} ({source.stderr.strip()}); skipped")
                continue
            (work / "old_serve.py").write_text(source.stdout)
            commands[name] = [sys.executable, str(work / "old_serve.py"), "--model", str(model), "--port", "0"]
    return commands


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all its threads (/proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def images_per_pass(port: int) -> float | None:
    import httpx
    try:
        return httpx.get(f"http://127.0.0.1:{port}/health", timeout=10).json().get("images_per_pass")
    except (httpx.HTTPError, ValueError):
        return None


def run_server(name: str, command: list[str], work: Path, request_for, levels, timeout: float) -> list[dict]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc, port = start(command, work / f"{name}.log", env)
    try:
        request = request_for(port)
        asyncio.run(load(port, request, 1, 10, timeout))          # warm-up: first passes, lazy imports
        rows = []
        for clients, each in levels:
            cpu = cpu_seconds(proc.pid)
            row = asyncio.run(load(port, request, clients, each, timeout))
            row.update(server=name, images_per_pass=images_per_pass(port) if name != "old" else None,
                       cpu_ms_per_image=(cpu_seconds(proc.pid) - cpu) * 1000 / max(row["ok"], 1))
            rows.append(row)
            print(format_row(row), flush=True)
        return rows
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()


def format_row(row: dict) -> str:
    def ms(v):
        return f"{v:7.0f}" if v is not None else "      -"
    batch = f"{row['images_per_pass']:5.1f}" if row.get("images_per_pass") else "    -"
    return (f"{row['server']:>6} {row['clients']:>4} clients  ok {row['ok']:>4}/{row['sent']:<4}  "
            f"p50 {ms(row['p50_ms'])} ms  p95 {ms(row['p95_ms'])} ms  {row['images_per_s']:7.1f} img/s  "
            f"images/pass {batch}  server CPU {row['cpu_ms_per_image']:5.1f} ms/img")


def ratios(rows: list[dict]) -> list[str]:
    """Per load: images/s over the old server's, and the old server's CPU per image over this one's."""
    old = {r["clients"]: r for r in rows if r["server"] == "old"}
    lines = []
    for row in rows:
        base = old.get(row["clients"])
        if row["server"] == "old" or not base or not base["images_per_s"]:
            continue
        lines.append(f"{row['server']:>6} {row['clients']:>4} clients: {row['images_per_s'] / base['images_per_s']:.1f}x "
                     f"the old server's images/s, {base['cpu_ms_per_image'] / row['cpu_ms_per_image']:.1f}x less "
                     f"CPU per image ({row['ok']} vs {base['ok']} of {row['sent']} answered)")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=REPO / "models/classifier/model.pt")
    parser.add_argument("--image", type=Path, default=None, help="the payload photo (default: sklearn's china.jpg)")
    parser.add_argument("--upscale", type=int, default=0, help="re-encode the photo with its longer side N px")
    parser.add_argument("--servers", default="torch,onnx,old")
    parser.add_argument("--clients", default="1,16,200")
    parser.add_argument("--requests", default="100,13,5", help="requests per client, per --clients entry")
    parser.add_argument("--timeout", type=float, default=60, help="seconds per request before it counts as an error")
    parser.add_argument("--old-rev", default="8e6d8b3", help="git revision holding the old stages/tools/serve.py "
                        "(default: the last commit before the FastAPI rewrite)")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    levels = list(zip(map(int, args.clients.split(",")), map(int, args.requests.split(","))))
    image, what = payload(args.image or default_photo(), args.upscale)
    load_before = os.getloadavg()
    print(f"payload {what}; model {args.model}; {len(os.sched_getaffinity(0))} cores; "
          f"load average before {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="serve-load-") as tmp:
        work = Path(tmp)
        for name, command in server_commands(args.servers.split(","), args.model, work, args.old_rev).items():
            rows += run_server(name, command, work, lambda port: multipart_request(port, image), levels, args.timeout)
    for line in ratios(rows):
        print(line)
    load_after = os.getloadavg()
    print(f"load average after {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}")
    if args.json:
        args.json.write_text(json.dumps({"payload": what, "load_before": load_before, "load_after": load_after,
                                         "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
