"""Stop a crawl's browser and remove its profile once the crawl is gone, even after SIGKILL.

Run as ``python watchdog.py``; it heads a new process group that ChromeDriver, and
through it Chromium, joins. It makes the profile (under $TMPDIR) and prints its
path, so the profile is never on disk unguarded. Then it blocks on a pipe only the
crawl holds, which closes when the crawl dies. A crawl that closes its browser itself
removes the profile, then kills the watchdog before it can act.

Stdlib only, and no package imports: it runs as a plain script, from any directory.
"""
from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
import time

USER_DATA = "user-data"   # Chromium's --user-data-dir, inside the profile
TMP = "tmp"               # Chromium's TMPDIR, inside the profile
SETTLE_S = 0.2            # for writes already inside the kernel when the group was killed
TRIES = 5                 # removal attempts, each after a longer wait


def remove_tree(path: str) -> bool:
    """Remove ``path``, retrying while dying processes still add files to it; True once gone."""
    for attempt in range(TRIES):
        shutil.rmtree(path, ignore_errors=True)
        if not os.path.lexists(path):
            return True
        time.sleep(SETTLE_S * (attempt + 1))
    return False


def stop_group_then_remove(profile: str) -> None:
    """SIGKILL the whole group (browser and driver), then remove the profile.

    The removal must come after the kill, or a browser still shutting down writes into
    the profile behind ``rmtree``. The kill must spare the remover, so a child leaves
    the group first (the leader cannot: setsid fails for a group leader).
    """
    group, leader = os.getpgrp(), os.getpid()
    if os.fork():
        os._exit(0)
    os.setsid()
    # wait until the leader has exited (we are re-parented): a kill sent before that would
    # reach it too, and whoever started us would see it die of SIGKILL instead of exit 0
    deadline = time.monotonic() + 2.0
    while os.getppid() == leader and time.monotonic() < deadline:
        time.sleep(0.005)
    try:
        os.killpg(group, signal.SIGKILL)
    except ProcessLookupError:
        pass
    time.sleep(SETTLE_S)
    remove_tree(profile)


def main() -> None:
    os.setpgrp()   # lead a group of our own: the only group this script may ever kill
    try:
        profile = tempfile.mkdtemp(prefix="kiln-chromium-")
        os.mkdir(os.path.join(profile, TMP))
    except OSError as err:   # the crawl reads no path and reports our exit
        sys.exit(f"kiln browser watchdog: cannot make a browser profile under $TMPDIR: {err}")
    try:
        os.write(sys.stdout.fileno(), f"{profile}\n".encode())
    except BrokenPipeError:   # the crawl died before reading it: clean up at once
        pass
    sys.stdin.buffer.read()
    stop_group_then_remove(profile)


if __name__ == "__main__":
    main()
