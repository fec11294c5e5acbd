"""The production serving layout, as the Procfile describes it, for `make run`, docker-compose,
the tests and the benchmarks.

    client -> proxy: Caddy (config/Caddyfile, PORT)
                 /api/feed/stream/  -> stream: uvicorn (ASGI, async SSE on Redis pub/sub)
                 /static/           -> files collected into STATIC_ROOT
                 everything else    -> web: granian (WSGI, one process per core)

Why: Django's ASGI handler caps a request/response endpoint near 1,000 req/s on the 2-core
machine, a WSGI server reaches 3,000-5,300 (bench figures in the README); Caddy reads each request
(body included) before a worker sees it, so a slow or stalled client never holds a Python worker.
The commands themselves live in the Procfile only; this module reads it (with honcho's parser),
sets the environment they expand and starts them. `python -m feedsite.serve` runs the three
servers in the foreground.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import os
import re
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from honcho.environ import parse_procfile

from feedsite.embedded import stop_group, stop_on_signals

BASE_DIR = Path(__file__).resolve().parent.parent
PROCFILE = BASE_DIR / "Procfile"
SERVERS = ("proxy", "web", "stream")  # the rest of the Procfile: worker and beat


def procfile(path: Path = PROCFILE) -> dict[str, str]:
    """The Procfile's processes: name -> shell command."""
    return dict(parse_procfile(path.read_text()).processes)


@dataclass(frozen=True)
class Layout:
    port: int  # the one public port (Caddy)
    run_dir: str  # web.sock and stream-<n>.sock: only the proxy reaches them
    static_root: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def layout_from_env(env: dict[str, str], port: int | None = None) -> Layout:
    var_dir = Path(env.get("FEEDSITE_VAR_DIR", BASE_DIR / "var"))
    port = port if port is not None else int(env.get("PORT", "8000"))
    # One folder of sockets per port: several stacks (tests, benchmarks) side by side.
    run_dir = Path(env.get("FEEDSITE_RUN_DIR") or var_dir / "run" / str(port))
    run_dir.mkdir(parents=True, exist_ok=True)
    # Only our own user may enter it: uvicorn makes its socket 0666, and whoever connects to a
    # socket is the trusted proxy to Django (its X-Forwarded-For is believed).
    run_dir.chmod(0o700)
    return Layout(
        port=port,
        run_dir=str(run_dir.resolve()),
        static_root=env.get("FEEDSITE_STATIC_ROOT") or str(var_dir / "static"),
    )


def trusted_proxies(value: str) -> list[str]:
    """FEEDSITE_TRUSTED_PROXIES (comma- or space-separated) as a list; each entry but `unix` must
    be an address or a network, named in the error otherwise. Pure."""
    entries = [p for p in re.split(r"[\s,]+", value) if p]
    for entry in entries:
        if entry != "unix":
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(
                    f"FEEDSITE_TRUSTED_PROXIES: {entry!r} is not an address, a network or unix"
                ) from None
    return entries


def process_env(layout: Layout, env: dict[str, str], host: str = "127.0.0.1") -> dict[str, str]:
    """``env`` plus what the Procfile's commands and the Caddyfile expand."""
    front = [p for p in trusted_proxies(env.get("FEEDSITE_TRUSTED_PROXIES", "")) if p != "unix"]
    return {
        **env,
        # `python`, `caddy` and `celery` of this environment (the venv), whoever starts us.
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", os.defpath)]),
        "FEEDSITE_PROXY_HOST": host,
        "FEEDSITE_PROXY_PORT": str(layout.port),
        "FEEDSITE_RUN_DIR": layout.run_dir,
        "FEEDSITE_STATIC_ROOT": layout.static_root,
        # The WSGI and ASGI servers hear only Caddy, on their Unix sockets: its X-Forwarded-For
        # (the real peer, appended to what a trusted front proxy sent and replacing what anyone
        # else sent) names the client. Django skips the front proxies' own addresses in it.
        "FEEDSITE_TRUSTED_PROXIES": ",".join(["unix", *front]),
        # Caddy keeps the X-Forwarded-* of these peers only (TLS-terminating front proxies).
        "FEEDSITE_PROXY_TRUSTED_PROXIES": " ".join(front),
        # Fewer Go garbage collections: ~10% less proxy CPU per request, a few MB more memory.
        "GOGC": env.get("GOGC", "400"),
        # Caddy keeps nothing we need; its data and config folders stay inside var/.
        "XDG_DATA_HOME": str(Path(layout.run_dir) / "caddy"),
        "XDG_CONFIG_HOME": str(Path(layout.run_dir) / "caddy"),
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
                raise RuntimeError(f"{p.args[-1]!r} exited with {p.returncode} while starting")
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
    full_env = process_env(layout, env, host)
    # Sockets left by servers that were killed would make them fail to bind.
    for name in ("web.sock",):  # (the stream processes remove their own)
        (Path(layout.run_dir) / name).unlink(missing_ok=True)
    commands = procfile()
    procs: list[subprocess.Popen] = []
    try:
        for name in SERVERS:
            procs.append(
                subprocess.Popen(
                    ["/bin/sh", "-c", f"exec {commands[name]}"],
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
