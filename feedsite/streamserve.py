"""The `stream` process of the Procfile: STREAM_CONCURRENCY uvicorn processes (one per core by
default), each on a socket of its own, sharing nothing but Redis; Caddy spreads the streams
over them in turn (round robin: streams are long-lived and alike, so turns spread them evenly).

    python -m feedsite.streamserve serve      # start them, restart one that dies, stop them all
    python -m feedsite.streamserve upstreams  # Caddy's upstream list (the proxy's command uses it)

Why several: a stream process is one event loop, one core; every stream of the machine on one
would leave the other cores idle while a post is written to thousands of connections. Why a
socket each rather than one shared socket: the kernel hands a shared socket's connections to
whichever process wakes first, not evenly, and each process has its own cap
(FEEDSITE_SSE_MAX_STREAMS_PER_PROCESS); Caddy takes them in turn and skips one it cannot dial.
Deliberately small (no supervisor library): honcho, docker-compose or systemd supervise this
process; it restarts a child that exits and forwards SIGTERM/SIGINT to all of them.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

RESTART_PAUSE = 1.0  # seconds between restarts of a child that keeps failing


def concurrency(env: dict[str, str] | os._Environ = os.environ) -> int:
    """STREAM_CONCURRENCY, default one process per core (at least 1)."""
    raw = env.get("STREAM_CONCURRENCY", "")
    n = int(raw) if raw.strip() else (os.cpu_count() or 1)
    if n < 1:
        raise SystemExit(f"STREAM_CONCURRENCY must be 1 or more, not {raw!r}")
    return n


def run_dir(env: dict[str, str] | os._Environ = os.environ) -> str:
    return env.get("FEEDSITE_RUN_DIR") or "var/run"


def socket_paths(env: dict[str, str] | os._Environ = os.environ) -> list[str]:
    """The stream processes' sockets: stream-0.sock, stream-1.sock, ... in the run folder."""
    return [f"{run_dir(env)}/stream-{i}.sock" for i in range(concurrency(env))]


def upstreams(env: dict[str, str] | os._Environ = os.environ) -> str:
    """Caddy's upstream addresses of the stream processes, space-separated."""
    return " ".join(f"unix/{path}" for path in socket_paths(env))


def process_cap(n: int, open_files: int, wanted: int = 5_000) -> int:
    """Streams per process when FEEDSITE_SSE_MAX_STREAMS_PER_PROCESS is not set: 5,000, less
    when the proxy could not hold them all. Caddy holds two descriptors per stream and, like
    every process here, at most ``open_files`` (the hard limit; 20,000 on the 2-core machine,
    not raisable): ``n`` processes' caps together stay under what it can hold, 1,000 kept for
    the rest, so a full machine answers 503 with Retry-After, never a proxy out of
    descriptors. Pure."""
    if open_files <= 0:  # unlimited
        return wanted
    return max(1, min(wanted, (open_files - 1_000) // (2 * n)))


def child_env(env: dict[str, str] | os._Environ = os.environ) -> dict[str, str]:
    """The stream processes' environment: the per-process cap derived (process_cap) unless set."""
    out = dict(env)
    if not out.get("FEEDSITE_SSE_MAX_STREAMS_PER_PROCESS"):
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        limit = -1 if hard == resource.RLIM_INFINITY else hard
        out["FEEDSITE_SSE_MAX_STREAMS_PER_PROCESS"] = str(process_cap(concurrency(env), limit))
    return out


def command(path: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "feedsite.asgi:application",
        "--uds",
        path,
        "--no-access-log",
        "--log-level",
        "warning",
        "--timeout-graceful-shutdown",
        "3",
        # A reconnect storm: thousands of connects queued while the loop serves the first ones
        # (the kernel caps it at net.core.somaxconn).
        "--backlog",
        "8192",
    ]


def serve() -> int:
    paths = socket_paths()
    env = child_env()
    children: dict[int, subprocess.Popen] = {}
    stopping = False

    def start(i: int) -> None:
        Path(paths[i]).unlink(missing_ok=True)
        children[i] = subprocess.Popen(command(paths[i]), env=env)

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for child in children.values():
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for i in range(len(paths)):
        start(i)
    while not stopping:
        time.sleep(0.2)
        for i, child in list(children.items()):
            if child.poll() is not None and not stopping:
                print(
                    f"stream process {i} exited with {child.returncode}; restarting",
                    file=sys.stderr,
                    flush=True,
                )
                time.sleep(RESTART_PAUSE)
                if not stopping:
                    start(i)
    deadline = time.monotonic() + 10
    for child in children.values():
        try:
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
    return 0


def main(argv: list[str]) -> int:
    if argv[1:] == ["upstreams"]:
        print(upstreams())
        return 0
    if argv[1:] == ["serve"]:
        return serve()
    print("usage: python -m feedsite.streamserve serve|upstreams", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
