"""Live-stream benchmark: N followers of one author each hold GET /api/feed/stream/ open through
the production layout (Caddy -> uvicorn, one stream server process), the author posts once
through the API (a real Celery worker fans it out), and every stream waits for the event.

Prints connected, received, delivery latency from the POST (p50/p99/max) and the memory the
stream server gained per open stream: the summed Pss (/proc/<pid>/smaps_rollup: private pages
plus each shared page divided among its sharers) of every process of the stream server's
session, after the streams opened minus before, divided by the streams connected; Caddy's the
same way, beside it. Last line:
`clients= connected= received= p50_ms= p99_ms= pss_kb_per_stream= proxy_pss_kb_per_stream=
rss_kb_per_stream=`.

    make bench-streams        # PostgreSQL and Redis of this machine; see the Makefile
    DATABASE_URL=postgres://... REDIS_URL=redis://... python bench/streams.py [--clients 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import time
from pathlib import Path

from common import Worker, ensure_follows, ensure_users, migrate, tokens_for
from django.conf import settings
from procmem import session_memory_kb

from feeds import store
from feeds.services import feed_settings_update
from feedsite.serve import SERVERS, serving


class Client:
    """One SSE stream on a raw socket: connected once `retry:` arrives, then waits for an id."""

    def __init__(self, port: int, token: str) -> None:
        self.port, self.token = port, token
        self.connected = asyncio.Event()
        self.status = 0
        self.arrivals: dict[str, float] = {}
        self.writer: asyncio.StreamWriter | None = None
        self.error = ""

    async def run(self) -> None:
        reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.writer.write(
            (
                f"GET /api/feed/stream/ HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Authorization: Token {self.token}\r\nAccept: text/event-stream\r\n\r\n"
            ).encode()
        )
        await self.writer.drain()
        status_line = await reader.readline()
        self.status = int(status_line.split()[1]) if status_line else 0
        if self.status != 200:
            self.error = (await reader.read(3000)).decode(errors="replace")[:1500]
            return
        while True:
            line = await reader.readline()
            if not line:
                return
            if line.startswith(b"retry:"):
                self.connected.set()
            elif line.startswith(b"data: "):
                self.arrivals.setdefault(json.loads(line[6:])["id"], time.perf_counter())

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def post(port: int, token: str) -> str:
    body = json.dumps({"verb": "starred", "object_type": "project", "object_id": "bench"})
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        (
            f"POST /api/activities/ HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Token {token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            f"Connection: close\r\n\r\n{body}"
        ).encode()
    )
    await writer.drain()
    raw = await reader.read()
    writer.close()
    head, _, payload = raw.partition(b"\r\n\r\n")
    if b" 201 " not in head.split(b"\r\n")[0]:
        raise RuntimeError(f"post failed: {head[:200]!r}")
    if b"chunked" in head.lower():
        payload = payload.split(b"\r\n", 1)[1]
    return json.loads(payload.split(b"\r\n0\r\n")[0])["id"]


async def measure(port: int, tokens: list[str], author_token: str, pids: dict[str, int]):
    # Each server was started in a session of its own: its pid is the session id, and every
    # worker it forks belongs to the session, so the sum covers the whole server.
    before = {name: session_memory_kb(pid) for name, pid in pids.items()}
    clients = [Client(port, t) for t in tokens]
    tasks = []
    for start in range(0, len(clients), 100):  # open in waves: no SYN flood of our own
        tasks += [asyncio.create_task(c.run()) for c in clients[start : start + 100]]
        await asyncio.sleep(0.05)
    try:
        await asyncio.wait_for(asyncio.gather(*(c.connected.wait() for c in clients)), timeout=120)
    except TimeoutError:
        pass
    connected = sum(c.connected.is_set() for c in clients)
    await asyncio.sleep(1.0)  # settle: every subscription in place
    after = {name: session_memory_kb(pid) for name, pid in pids.items()}
    started = time.perf_counter()
    aid = await post(port, author_token)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and sum(aid in c.arrivals for c in clients) < connected:
        await asyncio.sleep(0.05)
    latencies = sorted((c.arrivals[aid] - started) * 1000 for c in clients if aid in c.arrivals)
    for c in clients:
        c.close()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    statuses: dict[int, int] = {}
    for c in clients:
        statuses[c.status] = statuses.get(c.status, 0) + 1
    errors = {c.error for c in clients if c.error}
    for e in list(errors)[:3]:
        print("error answer:", e)
    return connected, latencies, before, after, statuses


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(len(values) * p))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--port", type=int, default=8766)
    args = parser.parse_args()
    if "postgresql" not in settings.DATABASES["default"]["ENGINE"] or not os.environ.get(
        "REDIS_URL"
    ):
        raise SystemExit("bench/streams.py runs on PostgreSQL and a Redis server (make does)")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 4 * args.clients)), hard))
    migrate()
    author_id, *fan_ids = ensure_users("streams", args.clients + 1)
    ensure_follows(fan_ids, author_id)
    feed_settings_update(celebrity_threshold=args.clients * 10)  # push: a real fan-out
    tokens = tokens_for([author_id, *fan_ids])
    store.client().delete(*(store.streams_key(u) for u in fan_ids))  # registries of old runs
    env = dict(os.environ, DEBUG="0", FEEDSITE_SECURE_SSL_REDIRECT="0")
    worker = Worker()
    log = open(Path(settings.VAR_DIR) / "bench-streams-server.log", "w")  # noqa: SIM115
    try:
        with serving(env, port=args.port, stdout=log, static=False) as (_, procs):
            pids = {name: procs[SERVERS.index(name)].pid for name in ("stream", "proxy")}
            connected, lat, before, after, statuses = asyncio.run(
                measure(args.port, tokens[1:], tokens[0], pids)
            )
    finally:
        worker.stop()
    n = max(connected, 1)
    per = {
        (name, kind): (after[name][kind] - before[name][kind]) / n
        for name in pids
        for kind in ("pss", "rss")
    }
    print(f"clients {args.clients}, connected {connected}, statuses {statuses}")
    print(
        f"received {len(lat)} of {connected}: from the POST p50 {pct(lat, 0.5):.0f} ms, "
        f"p99 {pct(lat, 0.99):.0f} ms, max {max(lat, default=float('nan')):.0f} ms"
        + (f", mean {statistics.mean(lat):.0f} ms" if lat else "")
    )
    for name, label in (("stream", "stream server"), ("proxy", "Caddy")):
        b, a = before[name], after[name]
        print(
            f"{label} ({a['processes']} processes): Pss {b['pss']} -> {a['pss']} KB "
            f"({per[name, 'pss']:.1f} KB per stream), Rss {b['rss']} -> {a['rss']} KB "
            f"({per[name, 'rss']:.1f} KB per stream)"
        )
    print(
        f"clients={args.clients} connected={connected} received={len(lat)} "
        f"p50_ms={pct(lat, 0.5):.0f} p99_ms={pct(lat, 0.99):.0f} "
        f"pss_kb_per_stream={per['stream', 'pss']:.1f} "
        f"proxy_pss_kb_per_stream={per['proxy', 'pss']:.1f} "
        f"rss_kb_per_stream={per['stream', 'rss']:.1f}"
    )


if __name__ == "__main__":
    main()
