"""DVC remotes end to end: push to a real S3-compatible server and a real SSH (SFTP) server,
clone the git repository afresh, pull, and find every file as it was; experiments travel too.

Both servers run inside this test process on 127.0.0.1 and stop with it:
- S3: moto's ThreadedMotoServer (moto[server], the dev extra), a real HTTP S3 API that
  dvc-s3 (s3fs/aiobotocore) talks to through `endpointurl`, as it would to MinIO.
- SSH: asyncssh's own SSH server with its SFTP subsystem, chrooted into a temp dir, key
  authentication only. Chosen over OpenSSH's sshd because dvc-ssh moves data purely over SFTP
  (sshfs on asyncssh: put, get, ls, mkdir, rename; it runs shell commands only for
  remote-to-remote copies and checksums, which push and pull never use), and an in-process
  server needs no root, no apt package, no system account, no privilege-separation directory
  and no daemon to reap: the test starts it on a free port and closes it. The client side is
  exactly what a user runs against OpenSSH.

The project is tiny on purpose (kiln's own chain is covered by test_e2e.py): ~3 MB of
`dvc add`ed data and two stages with a param, in a temp git + DVC repo whose git remote is a
bare repository on disk.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import shutil
import subprocess
import threading
from pathlib import Path

import pytest
import yaml

from conftest import stage_env

pytestmark = pytest.mark.e2e

BUCKET = "kiln-remote-test"
# moto accepts any credentials; the test passes them the two ways the README shows
AWS_KEY, AWS_SECRET = "kiln-test-key", "kiln-test-secret"

PREPARE = '''\
import pathlib, yaml
scale = yaml.safe_load(open("params.yaml"))["scale"]
table = bytes((i * scale) % 256 for i in range(256))
out = pathlib.Path("data/prepared"); out.mkdir(parents=True, exist_ok=True)
for f in sorted(pathlib.Path("data/raw").iterdir()):
    (out / f.name).write_bytes(f.read_bytes().translate(table))
'''
TRAIN = '''\
import hashlib, json, pathlib, yaml
scale = yaml.safe_load(open("params.yaml"))["scale"]
h = hashlib.sha256(str(scale).encode())
for f in sorted(pathlib.Path("data/prepared").iterdir()):
    h.update(f.read_bytes())
pathlib.Path("models").mkdir(exist_ok=True)
pathlib.Path("models/model.bin").write_bytes(h.digest() * 4096)    # 128 KiB
json.dump({"scale": scale, "digest": h.hexdigest()}, open("metrics.json", "w"))
'''
DVC_YAML = {
    "stages": {
        "prepare": {"cmd": "python prepare.py", "deps": ["prepare.py", "data/raw"],
                    "params": ["scale"], "outs": ["data/prepared"]},
        "train": {"cmd": "python train.py", "deps": ["train.py", "data/prepared"],
                  "params": ["scale"], "outs": ["models/model.bin"],
                  "metrics": [{"metrics.json": {"cache": False}}]},
    }
}


def env(**extra: str) -> dict[str, str]:
    e = stage_env()
    e.update(DVC_NO_ANALYTICS="1", GIT_TERMINAL_PROMPT="0")
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        e.pop(key, None)               # only what a step passes on purpose
    e.update(extra)
    return e


def run(cmd: list[str], cwd: Path, **extra: str) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env(**extra), capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}) in {cwd}:\n"
                             f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc.stdout + proc.stderr


def dvc_config(args: list[str], cwd: Path) -> None:
    """A dvc command that only writes config (init, config, remote add/modify), run in this
    process: the same code as the CLI without its 1-2 s start-up."""
    from dvc.cli import main

    old_cwd, old_env = os.getcwd(), os.environ.get("DVC_NO_ANALYTICS")
    os.chdir(cwd)
    os.environ["DVC_NO_ANALYTICS"] = "1"
    try:
        assert main(args) == 0, f"dvc {' '.join(args)} failed in {cwd}"
    finally:
        os.chdir(old_cwd)
        if old_env is None:
            os.environ.pop("DVC_NO_ANALYTICS")
        else:
            os.environ["DVC_NO_ANALYTICS"] = old_env


def checksums(root: Path) -> dict[str, str]:
    """sha256 of every file DVC tracks or produces in a workspace (data/, models/, metrics)."""
    files = [p for d in ("data", "models") for p in (root / d).rglob("*") if p.is_file()]
    files.append(root / "metrics.json")
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files
            if p.name != ".gitignore"}


def git_identity(repo: Path) -> None:
    run(["git", "config", "user.email", "test@kiln"], repo)
    run(["git", "config", "user.name", "kiln test"], repo)


# --- servers -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def s3_endpoint():
    import boto3
    from moto.server import ThreadedMotoServer

    werkzeug = logging.getLogger("werkzeug")
    level = werkzeug.level
    werkzeug.setLevel(logging.WARNING)                  # not one log line per request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                     aws_access_key_id=AWS_KEY, aws_secret_access_key=AWS_SECRET
                     ).create_bucket(Bucket=BUCKET)
        yield endpoint
    finally:
        server.stop()
        werkzeug.setLevel(level)


@pytest.fixture(scope="module")
def ssh_server(tmp_path_factory):
    """(port, client key file, the directory SFTP's '/' maps to)."""
    import asyncssh

    home = tmp_path_factory.mktemp("ssh")
    root = home / "sftp-root"
    root.mkdir()
    client_key = asyncssh.generate_private_key("ssh-ed25519")
    keyfile = home / "id_ed25519"
    keyfile.write_bytes(client_key.export_private_key())
    keyfile.chmod(0o600)

    class KeyOnly(asyncssh.SSHServer):
        def begin_auth(self, username: str) -> bool:
            return True                                # authentication is required

        def password_auth_supported(self) -> bool:
            return False

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="sftp-server", daemon=True)
    thread.start()

    async def start():
        return await asyncssh.create_server(
            KeyOnly, "127.0.0.1", 0,
            server_host_keys=[asyncssh.generate_private_key("ssh-ed25519")],
            authorized_client_keys=asyncssh.import_authorized_keys(
                client_key.export_public_key().decode()),
            sftp_factory=lambda chan: asyncssh.SFTPServer(chan, chroot=str(root)),
            allow_scp=False)

    server = asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=30)
    try:
        yield server.sockets[0].getsockname()[1], keyfile, root
    finally:
        async def stop():
            server.close()
            await server.wait_closed()
        asyncio.run_coroutine_threadsafe(stop(), loop).result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=30)
        loop.close()


# --- the project ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """A committed git + DVC repo: `dvc add`ed data/raw (24 × 128 KiB), two stages, reproduced."""
    import numpy as np

    root = tmp_path_factory.mktemp("remote-template") / "project"
    raw = root / "data" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(14)
    for i in range(24):
        (raw / f"part-{i:02d}.bin").write_bytes(rng.integers(0, 256, 128 * 1024, dtype=np.uint8).tobytes())
    (root / "prepare.py").write_text(PREPARE)
    (root / "train.py").write_text(TRAIN)
    (root / "params.yaml").write_text("scale: 3\n")
    (root / "dvc.yaml").write_text(yaml.safe_dump(DVC_YAML, sort_keys=False))
    run(["git", "init", "-q", "-b", "main"], root)
    git_identity(root)
    dvc_config(["init", "-q"], root)
    dvc_config(["config", "core.autostage", "true"], root)
    run(["dvc", "add", "-q", "data/raw"], root)
    run(["dvc", "repro", "-q"], root)
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-qm", "tiny project, reproduced"], root)
    return root


def project_with_remote(template: Path, tmp: Path, name: str, url: str,
                        config: dict[str, str], local: dict[str, str]) -> tuple[Path, Path]:
    """A copy of the template with `name` as its default DVC remote (`config` committed,
    `local` in .dvc/config.local, which git never sees), pushed to a bare git remote."""
    project = tmp / "project"
    shutil.copytree(template, project, symlinks=True)
    dvc_config(["remote", "add", "-d", name, url], project)
    for key, value in config.items():
        dvc_config(["remote", "modify", name, key, value], project)
    for key, value in local.items():
        dvc_config(["remote", "modify", "--local", name, key, value], project)
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-qm", f"DVC remote {name}"], project)
    origin = tmp / "origin.git"
    run(["git", "init", "-q", "--bare", "-b", "main", str(origin)], tmp)
    run(["git", "remote", "add", "origin", str(origin)], project)
    run(["git", "push", "-q", "origin", "main"], project)
    return project, origin


def round_trip(project: Path, origin: Path, clone: Path, *, clone_local: dict[str, str],
               clone_env: dict[str, str], push_env: dict[str, str], remote: str) -> None:
    """dvc push; git clone; dvc pull; status clean; repro a no-op; every file identical;
    then an experiment: exp run, exp push to the git remote, exp pull in the clone, apply."""
    pushed = run(["dvc", "push"], project, **push_env)
    assert "pushed" in pushed, pushed

    run(["git", "clone", "-q", str(origin), str(clone)], project.parent)
    git_identity(clone)
    assert not (clone / ".dvc" / "cache").exists()          # nothing but git came along
    assert not (clone / "data" / "raw").exists()
    for key, value in clone_local.items():
        dvc_config(["remote", "modify", "--local", remote, key, value], clone)
    run(["dvc", "pull"], clone, **clone_env)

    status = run(["dvc", "status"], clone, **clone_env)
    assert "up to date" in status, status
    repro = run(["dvc", "repro"], clone, **clone_env)
    assert "Running stage" not in repro, repro
    assert checksums(clone) == checksums(project)
    assert len(checksums(clone)) == 24 + 24 + 3      # raw, prepared, model, metrics, raw.dvc

    # experiments: run in the original, share through the git remote + DVC remote, pull
    run(["dvc", "exp", "run", "-S", "scale=5", "-n", "scale5"], project, **push_env)
    expected = checksums(project)
    assert expected["models/model.bin"] != checksums(clone)["models/model.bin"]
    run(["dvc", "exp", "push", "origin", "scale5"], project, **push_env)
    run(["dvc", "exp", "pull", "origin", "scale5"], clone, **clone_env)
    refs = run(["git", "for-each-ref", "--format=%(refname)", "refs/exps"], clone)
    assert refs.strip().endswith("/scale5"), refs                  # the experiment's ref came along
    run(["dvc", "exp", "apply", "scale5"], clone, **clone_env)     # outputs from the pulled cache
    assert checksums(clone) == expected
    status = run(["dvc", "status"], clone, **clone_env)
    assert "up to date" in status, status


def test_s3_remote_round_trip(template, s3_endpoint, tmp_path):
    project, origin = project_with_remote(
        template, tmp_path, "storage", f"s3://{BUCKET}/kiln",
        config={"endpointurl": s3_endpoint, "region": "us-east-1"},
        local={"access_key_id": AWS_KEY, "secret_access_key": AWS_SECRET})
    # the original uses its config.local credentials; the clone, the environment
    round_trip(project, origin, tmp_path / "clone", clone_local={},
               clone_env={"AWS_ACCESS_KEY_ID": AWS_KEY, "AWS_SECRET_ACCESS_KEY": AWS_SECRET},
               push_env={}, remote="storage")

    import boto3
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1",
                      aws_access_key_id=AWS_KEY, aws_secret_access_key=AWS_SECRET)
    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix="kiln/")
            for o in page.get("Contents", [])]
    assert len(keys) >= 24 + 24 + 1, keys            # raw + prepared + model (+ .dir manifests)


def test_ssh_remote_round_trip(template, ssh_server, tmp_path):
    port, keyfile, sftp_root = ssh_server
    project, origin = project_with_remote(
        template, tmp_path, "ssh-store", f"ssh://127.0.0.1:{port}/dvc-store",
        config={"user": "kiln"}, local={"keyfile": str(keyfile)})
    round_trip(project, origin, tmp_path / "clone", clone_local={"keyfile": str(keyfile)},
               clone_env={}, push_env={}, remote="ssh-store")
    stored = [p for p in (sftp_root / "dvc-store").rglob("*") if p.is_file()]
    assert len(stored) >= 24 + 24 + 1
    assert not any(p.name.endswith(".tmp") for p in stored)   # uploads were renamed into place
