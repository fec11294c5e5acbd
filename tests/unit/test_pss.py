"""bench/streams.py's memory per stream is the summed Pss of the stream server's processes:
the helper it uses agrees with /proc, and sees memory a process really touched."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.procmem import pss_kb, session_memory_kb, session_pids

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/smaps_rollup").exists(), reason="needs Linux /proc smaps_rollup"
)

# A child that, on each line read, touches that many more MB (b"x" * n writes every page) and
# forks one sleeping grandchild at start: a session of two processes, like a forking server.
CHILD = """
import os, sys, time
if os.fork() == 0:
    time.sleep(120)
    os._exit(0)
held = []
print("ready", flush=True)
for line in sys.stdin:
    held.append(b"x" * (int(line) * 1024 * 1024))
    print("done", flush=True)
"""


@pytest.fixture
def child():
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert proc.stdout.readline().strip() == "ready"
    deadline = time.monotonic() + 10
    while len(session_pids(proc.pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    yield proc
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _touch(proc: subprocess.Popen, mb: int) -> None:
    proc.stdin.write(f"{mb}\n")
    proc.stdin.flush()
    assert proc.stdout.readline().strip() == "done"


def test_summed_pss_is_each_process_smaps_rollup(child) -> None:
    pids = session_pids(child.pid)
    assert len(pids) == 2 and child.pid in pids  # the server and its forked worker
    total = session_memory_kb(child.pid)
    by_hand = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                by_hand += int(line.split()[1])
    assert total["processes"] == 2
    # Read a moment apart: shared library pages re-divide as other processes come and go.
    assert abs(total["pss"] - by_hand) <= max(256, by_hand // 50)
    assert pss_kb(child.pid) <= total["pss"]


def test_delta_matches_memory_touched_within_20_percent(child) -> None:
    before = session_memory_kb(child.pid)["pss"]
    _touch(child, 50)
    after = session_memory_kb(child.pid)["pss"]
    assert after - before == pytest.approx(50 * 1024, rel=0.2)
