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
import time
from pathlib import Path

import uvloop
from common import Worker, ensure_follows, ensure_users, migrate, tokens_for
from django.conf import settings
from procmem import session_cpu_ticks, session_memory_kb, session_pids

from feeds import store
from feeds.services import feed_settings_update
from feeds.store.followees import followees_key
from feeds.store.keys import stream_ledger_key
from feedsite.serve import SERVERS, serving


class Client:
    """One SSE stream on a raw socket: connected once `retry:` arrives (status 200, sent after
    authentication, and the first bytes); records each activity event's id and arrival, and the
    last `id:` (its Last-Event-ID on a reconnect)."""

    def __init__(self, port: int, token: str) -> None:
        self.port, self.token = port, token
        self.connected = asyncio.Event()
        self.connected_at = 0.0
        self.status = 0
        self.arrivals: dict[str, float] = {}
        self.received: list[str] = []  # activity ids, in arrival order (this connection)
        self.last_id: str | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.error = ""

    async def run(self, last_event_id: str | None = None) -> None:
        self.connected, self.status, self.received = asyncio.Event(), 0, []
        try:
            reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
            resume = f"Last-Event-ID: {last_event_id}\r\n" if last_event_id else ""
            self.writer.write(
                (
                    f"GET /api/feed/stream/ HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    f"Authorization: Token {self.token}\r\nAccept: text/event-stream\r\n"
                    f"{resume}\r\n"
                ).encode()
            )
            await self.writer.drain()
            status_line = await reader.readline()
            self.status = int(status_line.split()[1]) if status_line else 0
            if self.status != 200:
                self.error = (await reader.read(3000)).decode(errors="replace")[:1500]
                return
            kind, data = b"", b""
            while True:
                line = await reader.readline()
                if not line:
                    return
                if line.startswith(b"retry:"):
                    self.connected_at = time.perf_counter()
                    self.connected.set()
                elif line.startswith(b"id: "):
                    self.last_id = line[4:].strip().decode()
                elif line.startswith(b"event: "):
                    kind = line[7:].strip()
                elif line.startswith(b"data: "):
                    data = line[6:]
                elif line in (b"\n", b"\r\n") and data:
                    if kind in (b"", b"activity"):
                        aid = json.loads(data)["id"]
                        self.arrivals.setdefault(aid, time.perf_counter())
                        self.received.append(aid)
                    kind, data = b"", b""
        except (OSError, ValueError, IndexError) as exc:
            self.error = self.error or repr(exc)

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


async def open_all(
    clients: list[Client], seconds: float, resume: bool = False
) -> tuple[list[asyncio.Task], float]:
    """Start every client's connect, spread evenly over ``seconds`` (in 20 waves); with
    ``resume``, each sends its Last-Event-ID. Returns the tasks and when the first started."""
    tasks: list[asyncio.Task] = []
    waves = 20
    size = -(-len(clients) // waves)
    started = time.perf_counter()
    for w in range(waves):
        wave = clients[w * size : (w + 1) * size]
        tasks += [asyncio.create_task(c.run(c.last_id if resume else None)) for c in wave]
        await asyncio.sleep(seconds / waves)
    return tasks, started


def descriptors(sid: int) -> list[int]:
    """Open descriptors of each process of session ``sid`` holding more than 100 (the stream
    processes, one socket per stream: how evenly the proxy spread them)."""
    counts = []
    for pid in session_pids(sid):
        try:
            n = len(os.listdir(f"/proc/{pid}/fd"))
        except OSError:
            continue
        if n > 100:
            counts.append(n)
    return sorted(counts)


async def wait_idle(sid: int, timeout: float = 120) -> None:
    """Until the processes of session ``sid`` use under 5% of a core over half a second."""
    hz = os.sysconf("SC_CLK_TCK")
    deadline = time.monotonic() + timeout
    await asyncio.sleep(1.0)
    while time.monotonic() < deadline:
        before = session_cpu_ticks(sid)
        await asyncio.sleep(0.5)
        if (session_cpu_ticks(sid) - before) / hz < 0.025:
            return


async def wait_connected(clients: list[Client], timeout: float) -> None:
    waits = [asyncio.ensure_future(c.connected.wait()) for c in clients]
    done, pending = await asyncio.wait(waits, timeout=timeout)
    for w in pending:
        w.cancel()


async def deliver(port: int, author_token: str, clients: list[Client]) -> list[float]:
    """One post; the latencies (ms, sorted) from the POST to each connected client's event."""
    live = [c for c in clients if c.connected.is_set()]
    started = time.perf_counter()
    aid = await post(port, author_token)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and sum(aid in c.arrivals for c in live) < len(live):
        await asyncio.sleep(0.05)
    return sorted((c.arrivals[aid] - started) * 1000 for c in live if aid in c.arrivals)


async def close_all(clients: list[Client], tasks: list[asyncio.Task]) -> None:
    for c in clients:
        c.close()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def statuses_of(clients: list[Client]) -> dict[int, int]:
    statuses: dict[int, int] = {}
    for c in clients:
        statuses[c.status] = statuses.get(c.status, 0) + 1
    return statuses


def flush_feedsite_keys() -> int:
    """Delete every key of this deployment (the key prefix): the caches, feeds, ledgers and
    registries go, as in a Redis restart; the broker's keys stay (the worker's bindings)."""
    r, n = store.client(), 0
    for keys in _batches(r.scan_iter(match=f"{settings.FEEDSITE_KEY_PREFIX}:*", count=5000)):
        n += r.unlink(*keys)
    return n


def _batches(it, size: int = 5000):
    batch = []
    for item in it:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


async def measure(args, tokens: list[str], author_token: str, pids: dict[str, int]) -> dict:
    port = args.port
    out: dict = {}
    # Each server was started in a session of its own: its pid is the session id, and every
    # process it starts belongs to the session, so the sum covers the whole server.
    before = {name: session_memory_kb(pid) for name, pid in pids.items()}
    clients = [Client(port, t) for t in tokens]
    tasks, t0 = await open_all(clients, args.clients / 2000)  # gentle: 2,000 a second
    await wait_connected(clients, 120)
    out["gentle_connected"] = sum(c.connected.is_set() for c in clients)
    out["gentle_connect_s"] = max(
        (c.connected_at - t0 for c in clients if c.connected_at), default=0
    )
    out["gentle_statuses"] = statuses_of(clients)
    # Settled: every subscription in place and every new stream's opening snapshot taken
    # (they run two at a time per process after the connects): the stream processes idle.
    await wait_idle(pids["stream"])
    out["after"] = {name: session_memory_kb(pid) for name, pid in pids.items()}
    out["descriptors"] = descriptors(pids["stream"])
    out["before"] = before
    out["gentle_latencies"] = await deliver(port, author_token, clients)
    out["errors"] = {c.error for c in clients if c.error}
    if not args.storm:
        await close_all(clients, tasks)
        return out
    # The storm: every client drops (a deploy, a network blip); activities are published
    # meanwhile; then they all reconnect within --storm-seconds with their Last-Event-ID.
    await close_all(clients, tasks)
    await asyncio.sleep(2.0)  # the servers see the disconnects
    missed = [await post(port, author_token) for _ in range(args.missed)]
    await asyncio.sleep(3.0)  # fanned out (the catch-up reads the feeds)
    if args.flush:
        out["flushed_keys"] = flush_feedsite_keys()
    for c in clients:
        c.connected_at = 0.0
    resumed = {c for c in clients if c.last_id}  # owed what was missed: those that had an id
    tasks, t0 = await open_all(clients, args.storm_seconds, resume=True)
    await wait_connected(clients, 60)
    waits = sorted(c.connected_at - t0 for c in clients if c.connected_at)
    out["storm_waits"] = waits
    out["storm_statuses"] = statuses_of(clients)
    # Point 4: each reconnected client gets what it missed, in order, once (waited for up to
    # 90 s; when each had all of it, from the first reconnect).
    want = sorted(missed, key=int)
    wanted, done_at = set(want), {}
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        now = time.perf_counter() - t0
        for i, c in enumerate(clients):
            if i not in done_at and c in resumed and wanted <= set(c.received):
                done_at[i] = now
        if len(done_at) >= sum(c.connected.is_set() for c in resumed):
            break
        await asyncio.sleep(0.2)
    out["caught_up_s"] = sorted(done_at.values())
    exact = lost = dup = 0
    for c in clients:
        if not c.connected.is_set() or c not in resumed:
            continue
        got = [a for a in c.received if a in set(want)]
        exact += got == want
        lost += len(set(want) - set(got))
        dup += len(got) - len(set(got))
    out["catch_up"] = {"exact": exact, "missing": lost, "duplicates": dup}
    out["storm_latencies"] = await deliver(port, author_token, clients)
    out["errors"] |= {c.error for c in clients if c.error}
    await close_all(clients, tasks)
    return out


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(len(values) * p))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--port", type=int, default=8766)
    parser.add_argument("--storm", action="store_true", help="then all reconnect at once")
    parser.add_argument("--storm-seconds", type=float, default=2.0)
    parser.add_argument("--missed", type=int, default=3, help="posts while disconnected")
    parser.add_argument("--flush", action="store_true", help="delete every feedsite key first")
    args = parser.parse_args()
    if "postgresql" not in settings.DATABASES["default"]["ENGINE"] or not os.environ.get(
        "REDIS_URL"
    ):
        raise SystemExit("bench/streams.py runs on PostgreSQL and a Redis server (make does)")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 2 * args.clients + 100)), hard))
    migrate()
    author_id, *fan_ids = ensure_users("streams", args.clients + 1)
    ensure_follows(fan_ids, author_id)
    feed_settings_update(celebrity_threshold=args.clients * 10)  # push: a real fan-out
    tokens = tokens_for([author_id, *fan_ids])
    # What an earlier run left: registries, ledgers, and followee lists (ensure_follows writes
    # in bulk, without the signals that keep them current).
    r = store.client()
    for start in range(0, len(fan_ids) + 1, 5000):
        users = [author_id, *fan_ids][start : start + 5000]
        r.delete(*(store.streams_key(u) for u in users))
        r.delete(*(stream_ledger_key(u) for u in users))
        r.delete(*(followees_key(u) for u in users))
    env = dict(os.environ, DEBUG="0", FEEDSITE_SECURE_SSL_REDIRECT="0")
    worker = Worker()
    log = open(Path(settings.VAR_DIR) / "bench-streams-server.log", "w")  # noqa: SIM115
    try:
        with serving(env, port=args.port, stdout=log, static=False) as (_, procs):
            pids = {name: procs[SERVERS.index(name)].pid for name in ("stream", "proxy")}
            out = uvloop.run(measure(args, tokens[1:], tokens[0], pids))
    finally:
        worker.stop()
    report(args, out)


def report(args, out: dict) -> None:
    before, after = out["before"], out["after"]
    n = max(out["gentle_connected"], 1)
    per = {
        (name, kind): (after[name][kind] - before[name][kind]) / n
        for name in after
        for kind in ("pss", "rss")
    }
    for e in list(out["errors"])[:3]:
        print("error answer:", e)
    lat = out["gentle_latencies"]
    print(
        f"gentle: {args.clients} clients at 2,000/s, connected {out['gentle_connected']} "
        f"in {out['gentle_connect_s']:.1f} s, statuses {out['gentle_statuses']}; "
        f"descriptors per stream process {out['descriptors']}"
    )
    print(
        f"  one post: received {len(lat)} of {out['gentle_connected']}: from the POST "
        f"p50 {pct(lat, 0.5):.0f} ms, p99 {pct(lat, 0.99):.0f} ms, "
        f"max {max(lat, default=float('nan')):.0f} ms"
    )
    for name, label in (("stream", "stream processes"), ("proxy", "Caddy")):
        b, a = before[name], after[name]
        print(
            f"  {label} ({a['processes']} processes): Pss {b['pss']} -> {a['pss']} KB "
            f"({per[name, 'pss']:.1f} KB per stream), Rss {b['rss']} -> {a['rss']} KB "
            f"({per[name, 'rss']:.1f} KB per stream)"
        )
    summary = (
        f"clients={args.clients} connected={out['gentle_connected']} received={len(lat)} "
        f"p50_ms={pct(lat, 0.5):.0f} p99_ms={pct(lat, 0.99):.0f} "
        f"pss_kb_per_stream={per['stream', 'pss']:.1f} "
        f"proxy_pss_kb_per_stream={per['proxy', 'pss']:.1f}"
    )
    if args.storm:
        waits, slat = out["storm_waits"], out["storm_latencies"]
        within10 = sum(w <= 10 for w in waits)
        print(
            f"storm{' after a flush of ' + str(out['flushed_keys']) + ' keys' if args.flush else ''}"
            f": {args.clients} reconnects over {args.storm_seconds:.0f} s with Last-Event-ID, "
            f"connected {len(waits)} (within 10 s: {within10}), from the first connect "
            f"p50 {pct(waits, 0.5):.2f} s, p99 {pct(waits, 0.99):.2f} s, "
            f"max {max(waits, default=float('nan')):.2f} s; statuses {out['storm_statuses']}"
        )
        done = out["caught_up_s"]
        print(
            f"  caught up ({args.missed} missed posts each): {out['catch_up']}; all of it "
            f"within p50 {pct(done, 0.5):.1f} s, p99 {pct(done, 0.99):.1f} s, "
            f"max {max(done, default=float('nan')):.1f} s of the first reconnect"
        )
        print(
            f"  one post after: received {len(slat)}: p50 {pct(slat, 0.5):.0f} ms, "
            f"p99 {pct(slat, 0.99):.0f} ms"
        )
        summary += (
            f" storm_connected={len(waits)} storm_within_10s={within10} "
            f"storm_p99_s={pct(waits, 0.99):.2f} storm_max_s={max(waits, default=0):.2f} "
            f"catch_up_exact={out['catch_up']['exact']} catch_up_missing="
            f"{out['catch_up']['missing']} catch_up_duplicates={out['catch_up']['duplicates']} "
            f"catch_up_max_s={max(out['caught_up_s'], default=0):.1f} "
            f"storm_post_p99_ms={pct(slat, 0.99):.0f}"
        )
    print(summary)


if __name__ == "__main__":
    main()
