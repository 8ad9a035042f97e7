"""requirements.lock agrees with setup.cfg: what setup.sh installs is what kiln declares.

Regenerate the lock with `bash scripts/setup.sh --lock` after changing setup.cfg."""
from __future__ import annotations

import configparser
import importlib.metadata as md
import re
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
LOCK = REPO / "requirements.lock"
TORCH_SIDE = {"torch", "torchvision"}      # installed by setup.sh from TORCH_SPEC, not locked


def declared() -> list[Requirement]:
    """install_requires and the dev extra, as setup.cfg writes them."""
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    lines = cfg["options"]["install_requires"].splitlines()
    lines += cfg["options.extras_require"]["dev"].splitlines()
    return [Requirement(line.split("#")[0].strip()) for line in lines if line.split("#")[0].strip()]


def locked() -> dict[str, tuple[str, list[str]]]:
    """name -> (version, hashes) for every requirement in the lock."""
    text = LOCK.read_text().replace("\\\n", " ")
    out = {}
    for line in text.splitlines():
        if line.lstrip().startswith("#"):
            continue
        m = re.match(r"([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)(.*)", line.strip())
        if m:
            out[canonicalize_name(m[1])] = (m[2], re.findall(r"--hash=sha256:([0-9a-f]{64})", m[3]))
    return out


def test_every_declared_dependency_is_locked_at_a_version_it_allows():
    lock = locked()
    for req in declared():
        name = canonicalize_name(req.name)
        if name in TORCH_SIDE:
            assert name not in lock, f"{name} is installed from TORCH_SPEC, it must not be locked"
            continue
        assert name in lock, f"setup.cfg asks for {req}, requirements.lock lacks it: run 'bash scripts/setup.sh --lock'"
        version = lock[name][0]
        assert req.specifier.contains(version, prereleases=True), \
            f"setup.cfg asks for {req}, the lock pins {version}: run 'bash scripts/setup.sh --lock'"


def test_every_locked_package_is_pinned_with_hashes():
    lock = locked()
    assert len(lock) > 50
    for name, (version, hashes) in lock.items():
        assert hashes, f"{name}=={version} has no --hash"
    assert not TORCH_SIDE & set(lock)


def test_setup_installs_the_pinned_torch_that_the_lock_was_resolved_with():
    setup = (REPO / "scripts" / "setup.sh").read_text()
    spec = re.search(r'TORCH_SPEC=\$\{KILN_TORCH:-"([^"]+)"\}', setup)[1]
    assert {canonicalize_name(Requirement(r).name) for r in spec.split()} == TORCH_SIDE
    assert all("==" in r for r in spec.split())
    assert f"({spec})" in LOCK.read_text()       # the lock's header names the spec it was made with


@pytest.mark.skipif(sys.version_info[:2] != (3, 11) or sys.platform != "linux",
                    reason="the lock is resolved for CPython 3.11 on linux")
def test_the_lock_is_closed_under_the_installed_metadata():
    """Walk Requires-Dist from setup.cfg through every installed package whose version is the
    locked one (in CI: all of them): each dependency reached without passing through torch is
    in the lock, extras included (moto[server] brings flask, ...)."""
    lock = locked()
    todo = [(canonicalize_name(r.name), set(r.extras)) for r in declared()]
    seen: set[tuple[str, frozenset]] = set()
    walked = 0
    while todo:
        name, extras = todo.pop()
        if name in TORCH_SIDE or (name, frozenset(extras)) in seen:
            continue
        seen.add((name, frozenset(extras)))
        assert name in lock, f"{name} is needed but not locked: run 'bash scripts/setup.sh --lock'"
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            continue
        if Version(dist.version) != Version(lock[name][0]):
            continue                               # this environment was not installed from the lock
        walked += 1
        for line in dist.requires or []:
            req = Requirement(line)
            envs = [{"extra": e} for e in extras] or [{"extra": ""}]
            if req.marker is None or any(req.marker.evaluate(env) for env in envs):
                todo.append((canonicalize_name(req.name), set(req.extras)))
    if walked == 0:
        pytest.skip("no locked package is installed at its locked version")
