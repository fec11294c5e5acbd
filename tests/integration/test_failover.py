"""A master lost mid fan-out (issue 28, point 4), on `make test-cluster` (three masters with a
replica each, run by feedsite.devcluster in the parent process): SIGKILL a master while the real
worker fans an activity out to a thousand followers (home feeds, notification feeds, the
author's and an object's timelines); its replica is promoted, the worker's client learns the new
slot map, the jobs finish by themselves (retries, with the tests' budget of 2) and verify_feeds
finds every feed complete: 0 entries missing, with no manual step. An open stream whose pub/sub
node is killed goes on with later activities. The killed node is started again with its
identity: it rejoins as a replica, and the cluster is whole for the tests that follow.

Failovers are shortened for the test (cluster-node-timeout 2 s on every node, 15 s restored
after). `-s` shows the figures."""

from __future__ import annotations

import io
import json
import os
import queue
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from django.conf import settings
from django.core.management import call_command

from activities.services import activity_edit, activity_publish
from bench.common import ensure_follows, ensure_users
from feeds import store
from feeds.fanout import fanout_apply_batch, fanout_start
from feeds.models import FanoutDeadLetter, FanoutJob
from feeds.notifications import notifications_ensure
from feeds.rebuild import users_rebuild
from feeds.services import feed_settings_update
from feeds.store.connection import cluster_nodes
from feeds.store.failover import cluster_serving
from feedsite.devcluster import Cluster, ClusterError, command
from follows.services import follow_create, object_follow_create
from tests.conftest import wait_until
from tests.factories import UserFactory
from tests.integration.test_stream import Stream, post

pytestmark = [
    pytest.mark.skipif(not store.is_cluster(), reason="needs REDIS_URL=redis+cluster://"),
    pytest.mark.worker,
]

SHORT_TIMEOUT_MS = 2000  # cluster-node-timeout during a test: a failover in a few seconds
NORMAL_TIMEOUT_MS = 15000  # make test-cluster's --node-timeout, restored after


@dataclass(frozen=True)
class Node:
    """A line of CLUSTER NODES."""

    id: str
    port: int
    flags: frozenset[str]
    master: str  # the master's id for a replica, "-" for a master
    link: str
    slots: tuple[str, ...]

    @property
    def is_master(self) -> bool:
        return "master" in self.flags


def nodes_seen_by(port: int) -> list[Node]:
    found = []
    for line in command(port, "CLUSTER", "NODES", timeout=1).decode().splitlines():
        parts = line.split()
        address = parts[1].split("@")[0]
        found.append(
            Node(
                id=parts[0],
                port=int(address.rpartition(":")[2]),
                flags=frozenset(parts[2].split(",")),
                master=parts[3],
                link=parts[7],
                slots=tuple(parts[8:]),
            )
        )
    return found


def answers(port: int) -> bool:
    try:
        return command(port, "PING", timeout=0.5) == b"PONG"
    except (OSError, ClusterError):
        return False


def startup_port() -> int:
    """The node REDIS_URL names: the stream gateway's first pub/sub node."""
    return cluster_nodes(settings.REDIS_URL)[0].port


def problems(ports: list[int]) -> list[str]:
    """What keeps the cluster from being whole, as every node sees it: a node down, a slot not
    served, a node flagged or unlinked, a master without a replica whose link is up."""
    found = []
    for port in ports:
        try:
            info = command(port, "CLUSTER", "INFO", timeout=1).decode()
            seen = nodes_seen_by(port)
        except (OSError, ClusterError) as exc:
            found.append(f"{port}: {exc!r}")
            continue
        if "cluster_state:ok" not in info or "cluster_slots_ok:16384" not in info:
            found.append(f"{port}: not ok")
        if {n.port for n in seen} != set(ports):
            found.append(f"{port} knows {sorted(n.port for n in seen)}")
        for n in seen:
            if n.flags & {"fail", "fail?", "handshake", "noaddr"} or n.link != "connected":
                found.append(f"{port} sees {n.port} as {','.join(sorted(n.flags))} {n.link}")
        for master in (n for n in seen if n.is_master and n.slots):
            replicas = [n.port for n in seen if n.master == master.id]
            if not any(
                b"master_link_status:up" in command(r, "INFO", "replication", timeout=1)
                for r in replicas
                if answers(r)
            ):
                found.append(f"{port}: master {master.port} has no replica in sync")
    return found


@contextmanager
def short_failovers(ports: list[int]) -> Iterator[None]:
    for port in ports:
        command(port, "CONFIG", "SET", "cluster-node-timeout", SHORT_TIMEOUT_MS)
    try:
        yield
    finally:
        for port in ports:
            if answers(port):
                command(port, "CONFIG", "SET", "cluster-node-timeout", NORMAL_TIMEOUT_MS)


@pytest.fixture(scope="session")
def restarted() -> Iterator[list[Cluster]]:
    """Nodes started again by these tests: the cluster's launcher (the parent process) does not
    know these processes, so they are stopped here, once the session's last test has run."""
    nodes: list[Cluster] = []
    yield nodes
    for node in nodes:
        node.stop()


@pytest.fixture
def cluster(restarted: list[Cluster]) -> Iterator[ClusterControl]:
    control = ClusterControl(restarted)
    assert not control.problems(), control.problems()
    if not any(not n.is_master for n in nodes_seen_by(startup_port())):
        pytest.skip("needs replicas (make test-cluster: --replicas 1)")
    with short_failovers(control.ports):
        try:
            yield control
        finally:
            control.restart_killed()
    wait_until(lambda: not control.problems(), timeout=60, interval=0.2)


class ClusterControl:
    """The running cluster, seen from the test: kill a node, watch its replica take over,
    start it again."""

    def __init__(self, restarted: list[Cluster]) -> None:
        self.ports = sorted(n.port for n in nodes_seen_by(startup_port()))
        self.restarted = restarted
        self.killed: list[tuple[int, str, str]] = []  # (port, binary, dir)

    def problems(self) -> list[str]:
        return problems(self.ports)

    def masters(self) -> list[Node]:
        return [n for n in nodes_seen_by(startup_port()) if n.is_master and n.slots]

    def replica_of(self, port: int) -> int:
        seen = nodes_seen_by(next(p for p in self.ports if p != port and answers(p)))
        master = next(n for n in seen if n.port == port)
        return next(n.port for n in seen if n.master == master.id)

    def kill(self, port: int) -> float:
        """SIGKILL the node on ``port`` (its pid from INFO; its binary and files noted to start
        it again); returns the monotonic time of the kill."""
        pid = int(
            dict(
                line.split(":", 1)
                for line in command(port, "INFO", "server").decode().splitlines()
                if ":" in line
            )["process_id"]
        )
        binary = os.readlink(f"/proc/{pid}/exe")
        node_dir = command(port, "CONFIG", "GET", "dir")[1].decode()
        self.killed.append((port, binary, node_dir))
        os.kill(pid, signal.SIGKILL)
        killed_at = time.monotonic()
        wait_until(lambda: not answers(port), timeout=5)
        return killed_at

    def restart_killed(self) -> None:
        """Start every killed node again on its port with its cluster identity (its
        nodes-PORT.conf next to its directory): it rejoins as a replica of its successor."""
        while self.killed:
            port, binary, node_dir = self.killed.pop()
            node = Cluster(
                [None],  # type: ignore[list-item]  # restart() puts the new process here
                [port],
                Path(node_dir).parent,
                [],
                owns_workdir=False,
                node_timeout_ms=NORMAL_TIMEOUT_MS,
                binary=binary,
            )
            node.restart(0)
            self.restarted.append(node)


def role(port: int) -> str:
    try:
        return command(port, "ROLE", timeout=0.5)[0].decode()
    except (OSError, ClusterError):
        return "down"


LAG_BYTES = 40 << 20  # held back in the master's output buffer to its replica (kernel buffers
# on loopback hold a few MB; the replica's soft output-buffer limit is 64 MB)


def world(fans_n: int) -> tuple[int, list[int], list[int]]:
    """An author, ``fans_n`` followers with built home feeds, every other one with a built
    notification feed, five following the object "project:failover" (its timeline is kept)."""
    author = UserFactory().pk
    fans = ensure_users("failover-fan", fans_n)
    ensure_follows(fans, author)
    for fan in fans[:5]:
        object_follow_create(user_id=fan, object_type="project", object_id="failover")
    users_rebuild(user_ids=[author, *fans])  # built feeds: fan-out writes only those
    notified = fans[::2]
    for fan in notified:
        notifications_ensure(user_id=fan)
    return author, fans, notified


def publish(author: int, notified: list[int]) -> int:
    activity, _ = activity_publish(
        actor_id=author,
        data={
            "verb": "posted",
            "object_type": "project",
            "object_id": "failover",
            "notify": notified,
        },
    )
    return activity.id


@contextmanager
def lagging(master: int, replica: int) -> Iterator[None]:
    """The replica falls behind its master: stopped (SIGSTOP, shorter than the node timeout),
    then LAG_BYTES written to the master, which the replica cannot take: whatever the master
    acknowledges from now on waits in its output buffer behind them. On leaving, the master is
    killed first and the replica resumed after: what was in that buffer is lost, as in a
    master that dies before its replica caught up."""
    pid = pid_of(replica)
    os.kill(pid, signal.SIGSTOP)
    try:
        tag = next(f"lag{n}" for n in range(10_000) if node_port(f"{{lag{n}}}") == master)
        store.client().set(f"{settings.FEEDSITE_KEY_PREFIX}:{{{tag}}}:lag", b"x" * LAG_BYTES)
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def node_port(key: str) -> int:
    return store.client().get_node_from_key(key).port


def pid_of(port: int) -> int:
    info = command(port, "INFO", "server").decode()
    return int(dict(line.split(":", 1) for line in info.splitlines() if ":" in line)["process_id"])


def missing_entries() -> tuple[int, str]:
    """verify_feeds over every feed: (missing entries, its summary line)."""
    out = io.StringIO()
    try:
        call_command("verify_feeds", stdout=out)
    except SystemExit:
        pass  # it exits 1 when a feed is wrong
    summary = out.getvalue().strip().splitlines()[-1]
    return int(summary.split(" missing=")[1].split()[0]), summary


def test_a_master_killed_mid_fanout_loses_no_entry(live_worker, cluster):
    feed_settings_update(celebrity_threshold=10**6, fanout_batch_size=20)
    author, fans, notified = world(1000)
    wait_until(lambda: not FanoutJob.objects.exclude(state="done").exists(), timeout=30)
    victim = next(n.port for n in cluster.masters() if n.port != startup_port())
    heir = cluster.replica_of(victim)
    log_from = len(live_worker.log_path.read_text())

    started = time.monotonic()
    jobs = FanoutJob.objects.filter(activity_id=publish(author, notified))
    home = wait_until(lambda: jobs.filter(kind="publish", batches_total__gt=0).first(), 10, 0.005)
    # Mid-job (a fifth of the batches counted), the replica falls behind and the master dies:
    # what it acknowledged meanwhile never reaches the replica that takes over.
    wait_until(lambda: jobs.get(kind="publish").batches_done >= home.batches_total // 5, 30, 0.005)
    with lagging(victim, heir):
        behind = jobs.get(kind="publish").batches_done
        time.sleep(1.2)  # batches write to the master; their WAIT finds no replica
        at_kill = jobs.get(kind="publish").batches_done
        killed_at = cluster.kill(victim)
    wait_until(lambda: role(heir) == "master", timeout=30, interval=0.05)
    failover = time.monotonic() - killed_at
    wait_until(lambda: jobs.count() == 2 and not jobs.exclude(state="done").exists(), 90, 0.05)
    job_seconds = time.monotonic() - started
    assert at_kill < home.batches_total, "the job was over before the kill"
    assert list(jobs.values_list("state", flat=True)) == ["done", "done"]
    assert not FanoutDeadLetter.objects.filter(job__in=jobs).exists()
    retried = live_worker.log_path.read_text()[log_from:].count("] retry: Retry in")

    missing, summary = missing_entries()
    assert missing == 0 and "wrong=0" in summary, summary
    counts = dict(part.split("=") for part in summary.split()[1:] if "=" in part)
    assert int(counts["feeds"]) >= len(fans) and int(counts["notification_feeds"]) >= len(notified)
    print(
        f"\nfailover mid fan-out: replica {heir} behind by {LAG_BYTES >> 20} MB from batch "
        f"{behind} of {home.batches_total} ({at_kill - behind} counted while it could not "
        f"acknowledge), master {victim} killed; promoted after {failover:.1f} s; jobs done "
        f"{job_seconds:.1f} s after the publish ({retried} task retries); "
        f"verify_feeds: {summary.split(': ', 1)[1]} (missing=0)"
    )


@pytest.mark.django_db
def test_without_the_wait_the_same_failover_loses_acknowledged_entries(settings, cluster):
    """The control: the same lag and kill with FEEDSITE_FANOUT_REPLICATE off, the job run in
    this process (every batch counts at once): entries the master acknowledged are gone."""
    settings.FEEDSITE_FANOUT_REPLICATE = False
    feed_settings_update(celebrity_threshold=10**6, fanout_batch_size=50)
    author, _, notified = world(300)
    victim = next(n.port for n in cluster.masters() if n.port != startup_port())
    heir = cluster.replica_of(victim)
    aid = publish(author, notified)  # (its job waits: no commit, the worker never sees it)
    with lagging(victim, heir):
        for job_id in FanoutJob.objects.filter(activity_id=aid).values_list("id", flat=True):
            for batch in fanout_start(job_id=job_id):
                fanout_apply_batch(job_id=job_id, batch_no=batch.batch_no, lo=batch.lo, hi=batch.hi)
        assert not FanoutJob.objects.filter(activity_id=aid).exclude(state="done").exists()
        cluster.kill(victim)
    wait_until(lambda: role(heir) == "master", timeout=30, interval=0.05)
    wait_until(cluster_serving, timeout=30, interval=0.1)  # (this process's client learns it)
    missing, summary = missing_entries()
    assert missing > 0, summary
    print(f"\nwithout the WAIT, the same failover: {summary.split(': ', 1)[1]}")


@pytest.mark.django_db(transaction=True)
def test_a_dead_replica_holds_no_edit_back(settings, restarted):
    """An edit answers once a replica has its write (connection.replicate); a replica that is
    dead (SIGKILL; the cluster has not flagged it yet: cluster-node-timeout 15 s here, and the
    client's slot map still lists it) answers no read, so the edit does not wait for it (its
    master no longer lists it, or it refuses connections), and once started again the replica
    syncs the edit before it serves (a stalled replica, which could answer later from before
    the edit, still holds it back: test_hedged_reads)."""
    settings.FEEDSITE_REPLICATE_TIMEOUT_MS = 500
    control = ClusterControl(restarted)
    assert not control.problems(), control.problems()
    feed_settings_update(celebrity_threshold=10**6)
    author = UserFactory()
    data = {"verb": "posted", "object_type": "note"}
    aids = [activity_publish(actor_id=author.pk, data={**data, "object_id": f"n{n}"})[0].id
            for n in range(30)]  # fmt: skip
    startup = startup_port()
    aid, master = next(
        (a, node_port(store.body_key(a))) for a in aids if node_port(store.body_key(a)) != startup
    )
    replica = control.replica_of(master)
    try:
        control.kill(replica)
        started = time.monotonic()
        activity_edit(activity_id=aid, changes={"object_title": "after the edit"})
        took = time.monotonic() - started
        assert role(master) == "master"  # no failover: the master was never gone
    finally:
        control.restart_killed()
    wait_until(lambda: not control.problems(), timeout=60, interval=0.2)
    with redis.Redis(port=replica, socket_timeout=2) as r:  # a replica in sync answers reads
        r.execute_command("READONLY")
        body = r.get(store.body_key(aid))
    print(f"\nan edit with its master's only replica dead answered in {took * 1000:.0f} ms")
    assert took < 2, took  # at most one WAIT (0.5 s), not a 503
    assert body is not None and b"after the edit" in body


def _read_events(stream: Stream, seen: dict[int, int], until: float) -> tuple[int | None, bool]:
    """Read ``stream`` until ``until`` (monotonic), counting each activity event's id in
    ``seen``: (the last event id, whether the stream ended with `dropped`)."""
    kind, last = "message", None
    while time.monotonic() < until:
        try:
            line = stream.lines.get(timeout=0.1)
        except queue.Empty:
            continue
        if line.startswith("id:"):
            last = int(line[3:].strip())
        elif line.startswith("event:"):
            kind = line[6:].strip()
        elif line.startswith("data:"):
            if kind == "dropped":
                return last, True
            if kind == "activity" or kind == "message":
                aid = int(json.loads(line[5:])["id"])
                seen[aid] = seen.get(aid, 0) + 1
            kind = "message"
    return last, False


def reconnect(url: str, reader, last_event_id: str) -> Stream:
    """Connect again with Last-Event-ID, as an EventSource does: a 503 (Redis unavailable) is
    retried a second later, for up to 30 s."""
    deadline = time.monotonic() + 30
    while True:
        try:
            return Stream(url, reader, last_event_id=last_event_id)
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def subscribers(port: int, channel: str) -> int:
    """Subscribers of ``channel`` on the node on ``port`` (PUBSUB NUMSUB counts its own)."""
    return int(command(port, "PUBSUB", "NUMSUB", channel)[1])


def test_an_open_stream_whose_pubsub_node_dies_gets_later_activities(live_worker, served, cluster):
    author, reader = UserFactory(), UserFactory()
    follow_create(follower_id=reader.pk, followee_id=author.pk)
    channel = store.live_channel(author.pk)
    stream = Stream(served, reader)
    streams = [stream]
    try:
        first = int(post(author, "before"))
        assert int(stream.next_activity()["id"]) == first
        node = startup_port()  # the gateway listens on it
        assert subscribers(node, channel) == 1
        heir = cluster.replica_of(node) if role(node) == "master" else None
        killed_at = cluster.kill(node)
        # Published while the node is dead (its fan-out waits for the promotion when the
        # author's timeline lives there); announced once its job runs.
        during = activity_publish(
            actor_id=author.pk,
            data={"verb": "starred", "object_type": "project", "object_id": "during"},
        )[0].id
        if heir is not None:
            wait_until(lambda: role(heir) == "master", timeout=30, interval=0.05)
        failover = time.monotonic() - killed_at
        # It comes back (a replica now), so that the tests after this one meet a whole
        # cluster. The gateway listens elsewhere by then.
        cluster.restart_killed()
        wait_until(cluster_serving, timeout=30, interval=0.1)
        later = [during, *(int(post(author, f"after-{n}")) for n in range(2))]
        seen: dict[int, int] = {}
        reconnects = 0
        deadline = time.monotonic() + 30
        last: int | None = first
        while not set(later) <= set(seen) and time.monotonic() < deadline:
            last, dropped = _read_events(stream, seen, min(deadline, time.monotonic() + 1))
            if dropped:  # the gateway could not replay: the client resumes from its id
                reconnects += 1
                stream = reconnect(served, reader, str(last or first))
                streams.append(stream)
        got = time.monotonic() - killed_at
        assert set(later) <= set(seen), (later, seen)
        assert all(seen[a] == 1 for a in later), seen  # each once
        assert subscribers(node, channel) == 0  # the subscription moved to another node
        assert sum(subscribers(p, channel) for p in cluster.ports if p != node) == len(streams)
        print(
            f"\nstream across its pub/sub node's death: node {node} killed "
            f"({'a master; replica promoted' if heir else 'a replica'} after {failover:.1f} s); "
            f"{len(later)}/{len(later)} later activities received {got:.1f} s after the kill, "
            f"each once, {reconnects} reconnect(s) with Last-Event-ID"
        )
    finally:
        for s in streams:
            s.close()
