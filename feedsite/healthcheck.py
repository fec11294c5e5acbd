"""Container health checks (docker-compose), with nothing but the standard library:

    python -m feedsite.healthcheck http://127.0.0.1:8000/healthz
    python -m feedsite.healthcheck unix:/app/var/run/web.sock/healthz    (socket path, then URL path)
    python -m feedsite.healthcheck --fresh-file /app/var/celerybeat-schedule 600

Healthy: an HTTP answer below 500 that is not the proxy's 502 (a stream asked without a token
answers 401: the server is up), or a file (or its shelve's files) modified within the given number of seconds.
"""

from __future__ import annotations

import http.client
import os
import socket
import sys
import time
from urllib.parse import urlsplit


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, socket_path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = socket_path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.socket_path)


def split_target(target: str) -> tuple[str, str, int | None, str]:
    """('unix', socket path, None, URL path) or ('tcp', host, port, URL path). Pure."""
    if target.startswith("unix:"):
        rest = target[len("unix:") :]
        head, sep, tail = rest.partition(".sock")
        if not sep:
            raise ValueError(f"no .sock in {target!r}")
        return "unix", head + sep, None, tail or "/"
    parts = urlsplit(target)
    return "tcp", parts.hostname or "127.0.0.1", parts.port or 80, parts.path or "/"


def http_ok(target: str, timeout: float = 3) -> bool:
    kind, host, port, path = split_target(target)
    conn: http.client.HTTPConnection = (
        _UnixConnection(host, timeout)
        if kind == "unix"
        else http.client.HTTPConnection(host, port, timeout=timeout)
    )
    try:
        conn.request("GET", path, headers={"Host": "localhost"})
        status = conn.getresponse().status
    except OSError:
        return False
    finally:
        conn.close()
    return status < 500


def file_fresh(path: str, seconds: float) -> bool:
    """Whether ``path`` (or a file of the shelve it names: .db, .dat, ...) changed lately."""
    folder, name = os.path.split(path)
    try:
        mtimes = [e.stat().st_mtime for e in os.scandir(folder or ".") if e.name.startswith(name)]
    except OSError:
        return False
    return bool(mtimes) and time.time() - max(mtimes) < seconds


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[0] == "--fresh-file":
        return 0 if file_fresh(argv[1], float(argv[2])) else 1
    if len(argv) == 1:
        return 0 if http_ok(argv[0]) else 1
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
