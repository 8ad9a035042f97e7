"""The browser watchdog: a crawl killed at any moment leaves no browser and no profile behind.

No Chromium here: a stand-in "browser" that ignores SIGTERM and keeps writing into the
profile plays the worst case of a browser shutting down, and a fake WebDriver lets the
real ``open_browser`` run up to the moment the crawl is killed.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from conftest import stage_env
from stages.crawl.engines import browser
from stages.crawl.engines import watchdog

# Joins the watchdog's group, ignores SIGTERM, writes into the profile until killed.
WRITER = textwrap.dedent("""
    import os, signal, sys, itertools
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    os.setpgid(0, int(sys.argv[2]))
    for n in itertools.count():
        os.makedirs(os.path.join(sys.argv[1], "user-data", str(n % 50)), exist_ok=True)
        open(os.path.join(sys.argv[1], "user-data", str(n % 50), str(n)), "w").close()
""")

# Opens the real open_browser over a fake driver, then dies by SIGKILL in the middle of
# removing the profile: the moment the crawl is most likely to leave it half-removed.
KILLED_WHILE_CLOSING = textwrap.dedent("""
    import os, signal, types
    from selenium import webdriver
    from stages.crawl.engines import browser
    from stages.crawl.engines import watchdog

    class FakeDriver:
        def __init__(self, **_): pass
        def set_page_load_timeout(self, _): pass
        def quit(self): pass

    def die_halfway(path):
        os.rmdir(os.path.join(path, "tmp"))
        os.kill(os.getpid(), signal.SIGKILL)

    webdriver.Chrome = FakeDriver
    watchdog.remove_tree = die_halfway
    crawl = types.SimpleNamespace(user_agent="kiln-test", load_images=False, page_load_timeout_s=5)
    with browser.open_browser(crawl):
        pass
""")


def start_watchdog(temp_root: Path, monkeypatch) -> tuple[subprocess.Popen, Path]:
    """A watchdog, and the profile it made under ``temp_root`` (the subprocess's TMPDIR)."""
    monkeypatch.setenv("TMPDIR", str(temp_root))
    guard, profile = browser._start_watchdog()
    assert Path(profile).parent == temp_root and (Path(profile) / "tmp").is_dir()
    return guard, Path(profile)


def wait_until(condition, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def test_dead_crawl_stops_a_browser_that_ignores_sigterm_and_removes_its_profile(tmp_path, monkeypatch):
    guard, profile = start_watchdog(tmp_path, monkeypatch)
    (profile / "user-data").mkdir()
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(profile), str(guard.pid)])
    assert wait_until(lambda: len(list((profile / "user-data").iterdir())) >= 10)

    guard.stdin.close()   # what the kernel does when the crawl dies
    assert guard.wait(timeout=10) == 0

    assert writer.wait(timeout=10) == -signal.SIGKILL
    assert wait_until(lambda: not profile.exists()), sorted(os.listdir(profile))


def test_crawl_killed_while_removing_its_profile_leaves_it_to_the_watchdog(tmp_path):
    temp_root = tmp_path / "t"
    temp_root.mkdir()
    env = {**stage_env(), "TMPDIR": str(temp_root), "KILN_CHROMIUM": "/bin/true",
           "KILN_CHROMEDRIVER": "/bin/true"}
    crawl = subprocess.run([sys.executable, "-c", KILLED_WHILE_CLOSING], env=env,
                           capture_output=True, text=True, timeout=60)
    assert crawl.returncode == -signal.SIGKILL, crawl.stderr
    assert wait_until(lambda: not any(temp_root.iterdir())), sorted(temp_root.rglob("*"))


def test_normal_close_removes_the_profile_and_dismisses_the_watchdog(tmp_path, monkeypatch):
    guard, profile = start_watchdog(tmp_path, monkeypatch)
    (profile / "user-data" / "Default").mkdir(parents=True)
    browser._close(str(profile), guard)
    assert not profile.exists()
    assert guard.returncode == -signal.SIGKILL   # dismissed, never acted


def test_crawl_dead_before_reading_the_profile_path_leaves_nothing(tmp_path):
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    guard = subprocess.Popen([sys.executable, "-I", watchdog.__file__], env=env,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    guard.stdout.close()   # the crawl died at once: it never reads the path, never writes
    guard.stdin.close()
    assert guard.wait(timeout=10) == 0
    assert wait_until(lambda: not any(tmp_path.iterdir())), sorted(tmp_path.rglob("*"))
