"""feedsite.devcluster: a real 3-master Redis Cluster of redis-server processes on loopback, as
redis-py's cluster client sees it. No database, and never the Redis of REDIS_URL."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import redis.crc

from feedsite.devcluster import Cluster, key_slot, start_cluster

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def clean_redis() -> Iterator[None]:
    """Overrides tests/conftest.py's (which cleans the server of REDIS_URL, a Redis other runs
    share): this module talks to its own cluster only."""
    yield


@pytest.fixture(autouse=True)
def fresh_settings_cache() -> Iterator[None]:
    """Overrides tests/conftest.py's, which deletes a key in the cache on REDIS_URL."""
    yield


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    c = start_cluster(3)
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture
def rc(cluster: Cluster) -> Iterator[redis.RedisCluster]:
    client = redis.RedisCluster.from_url(cluster.cluster_client_url())
    try:
        yield client
    finally:
        client.close()


def node_clients(cluster: Cluster, **kwargs) -> list[redis.Redis]:
    return [redis.Redis.from_url(url, **kwargs) for url in cluster.urls()]


def redis_server_pids(ports: list[int]) -> list[int]:
    """Live redis-server processes serving one of ``ports`` (redis-server rewrites its command
    line to "redis-server 127.0.0.1:PORT [cluster]")."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "redis-server" in cmdline and any(
            f"127.0.0.1:{p} " in f"{cmdline} " or f"--port {p} " in f"{cmdline} " for p in ports
        ):
            found.append(int(entry.name))
    return found


def refuses(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except ConnectionRefusedError:
        return True
    return False


def test_the_nodes_form_one_healthy_cluster(cluster: Cluster):
    assert len(cluster.ports) == len(set(cluster.ports)) == 3
    # Every node a startup node: a client made while one is down still starts.
    assert cluster.url == "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in cluster.ports)
    assert cluster.urls() == [f"redis://127.0.0.1:{p}" for p in cluster.ports]
    for client in node_clients(cluster):
        info = client.execute_command("CLUSTER INFO")
        info = (
            info
            if isinstance(info, dict)
            else dict(line.split(":", 1) for line in info.decode().splitlines() if ":" in line)
        )
        assert info["cluster_state"] == "ok"
        assert int(info["cluster_known_nodes"]) == 3
        assert int(info["cluster_slots_assigned"]) == 16384
        assert int(info["cluster_size"]) == 3
        # The project's config/redis.conf is loaded too.
        assert client.config_get("zset-max-ziplist-entries") == {"zset-max-ziplist-entries": "1024"}
        assert (
            client.config_get("cluster-require-full-coverage")["cluster-require-full-coverage"]
            == "no"
        )
        client.close()
    assert cluster.problems() == []


def test_keys_land_on_every_node_and_each_lives_on_its_owner(
    cluster: Cluster, rc: redis.RedisCluster
):
    nodes = dict(zip(cluster.ports, node_clients(cluster), strict=True))
    owners: dict[int, list[str]] = {}
    for n in range(60):
        key = f"devcluster-test:{n}"
        rc.set(key, n)
        slot = nodes[cluster.ports[0]].execute_command("CLUSTER KEYSLOT", key)
        assert slot == key_slot(key) == redis.crc.key_slot(key.encode())
        owner = rc.get_node_from_key(key).port
        assert owner == cluster.port_of_key(key) == cluster.ports[cluster.node_for_slot(slot)]
        owners.setdefault(owner, []).append(key)
    assert set(owners) == set(cluster.ports)  # every node holds some of them
    for port, keys in owners.items():
        for key in keys:  # one GET each: MGET of keys in several slots is CROSSSLOT
            assert nodes[port].get(key) == key.rsplit(":", 1)[1].encode()
        other = nodes[next(p for p in cluster.ports if p != port)]
        with pytest.raises(redis.exceptions.MovedError):
            other.get(keys[0])  # a node answers only for its own slots
    rc.delete(*[k for keys in owners.values() for k in keys])
    for client in nodes.values():
        client.close()


def test_a_script_on_two_keys_with_one_hash_tag(cluster: Cluster, rc: redis.RedisCluster):
    a, b = "devcluster-test:{user:7}:a", "devcluster-test:{user:7}:b"
    assert key_slot(a) == key_slot(b)
    script = "redis.call('SET', KEYS[1], ARGV[1]); return redis.call('INCRBY', KEYS[2], ARGV[1])"
    assert rc.eval(script, 2, a, b, 5) == 5
    assert rc.eval(script, 2, a, b, 5) == 10
    assert rc.get(a) == b"5" and rc.get(b) == b"10"
    rc.delete(a, b)


def test_a_publish_on_one_node_reaches_a_subscriber_on_another(cluster: Cluster):
    publisher, subscriber_node, _ = node_clients(cluster)
    pubsub = subscriber_node.pubsub()
    try:
        pubsub.subscribe("devcluster-test-channel")
        assert pubsub.get_message(timeout=5)["type"] == "subscribe"  # its node has it now
        publisher.publish("devcluster-test-channel", "hello")  # sent on over the cluster bus
        message = pubsub.get_message(timeout=5)
        assert message is not None and message["type"] == "message", message
        assert message["data"] == b"hello"
    finally:
        pubsub.close()
        publisher.close()
        subscriber_node.close()


def test_a_paused_node_times_out_while_the_others_answer(cluster: Cluster):
    clients = node_clients(cluster, socket_timeout=0.2)
    try:
        cluster.pause(1)
        with pytest.raises(redis.TimeoutError):
            clients[1].ping()
        assert clients[0].ping() and clients[2].ping()
        assert clients[0].set(f"devcluster-test:{{{_tag_on(cluster, 0)}}}", 1)  # still writable
        cluster.resume(1)
        assert clients[1].ping()
    finally:
        cluster.resume(1)
        for client in clients:
            client.close()
        cluster.wait_healthy()  # the next test gets a cluster with no node flagged


def _tag_on(cluster: Cluster, i: int) -> str:
    """A hash tag whose slot node i owns."""
    return next(str(n) for n in range(10_000) if cluster.node_for_slot(key_slot(str(n))) == i)


def test_stop_leaves_no_redis_server_running():
    c = start_cluster(3)
    try:
        ports, pids = list(c.ports), [p.pid for p in c.processes]
        assert sorted(redis_server_pids(ports)) == sorted(pids)
        c.pause(2)  # a hung node is stopped too
        c.stop()
        assert all(p.poll() is not None for p in c.processes)
        assert redis_server_pids(ports) == []
        for pid in pids:
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
        assert all(refuses(p) for p in ports)
        assert not c.workdir.exists()
    finally:
        c.stop()


def test_the_command_line_runs_a_cluster_until_sigterm():
    proc = subprocess.Popen(
        [sys.executable, "-m", "feedsite.devcluster", "--masters", "3"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    ports: list[int] = []
    try:
        line = proc.stdout.readline().strip()
        assert line.startswith("REDIS_URL=redis+cluster://127.0.0.1:"), proc.stderr.read()
        first = int(line.rsplit(":", 1)[1])
        client = redis.RedisCluster.from_url(f"redis://127.0.0.1:{first}")
        ports = sorted(node.port for node in client.get_primaries())
        assert len(ports) == 3 and first in ports
        assert client.set("devcluster-test:cli", 1) and client.get("devcluster-test:cli") == b"1"
        client.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        assert redis_server_pids(ports) == []
    finally:
        if proc.poll() is None:
            proc.terminate()  # it stops its nodes on SIGTERM
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for pid in redis_server_pids(ports):  # only if it died without stopping them
            os.kill(pid, signal.SIGKILL)
        proc.stdout.close()
        proc.stderr.close()


def _role(port: int) -> tuple[str, int | None]:
    """(role, its master's port for a replica) as the node on ``port`` reports it (ROLE)."""
    client = redis.Redis(port=port, socket_timeout=1)
    try:
        reply = client.execute_command("ROLE")
    finally:
        client.close()
    role = reply[0].decode()
    return role, int(reply[2]) if role == "slave" else None


def _wait(predicate, timeout: float) -> float:
    """Poll ``predicate`` until true; the seconds it took (AssertionError after ``timeout``)."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not within {timeout} s")
        time.sleep(0.05)
    return time.monotonic() - started


def test_replicas_follow_their_masters_and_take_over_when_one_is_killed():
    # A short cluster-node-timeout: the killed master is failed over within seconds.
    c = start_cluster(3, replicas=1, node_timeout_ms=1000)
    rc = redis.RedisCluster.from_url(c.cluster_client_url())
    try:
        assert len(c.ports) == 6 and c.replica_of == {3: 0, 4: 1, 5: 2}
        assert c.roles() == {0: "master", 1: "master", 2: "master"} | {
            3: "slave",
            4: "slave",
            5: "slave",
        }
        for replica, master in c.replica_of.items():
            assert _role(c.ports[replica]) == ("slave", c.ports[master])
            assert c.replicas_of(master) == [replica]
        assert c.problems() == []
        # A key on master 0, acknowledged by its replica (WAIT) before the kill.
        key = f"devcluster-test:{{{_tag_on(c, 0)}}}"
        rc.set(key, "kept")
        owner = redis.Redis(port=c.ports[0])
        assert owner.execute_command("WAIT", 1, 2000) == 1
        owner.close()
        c.kill(0)
        took = _wait(lambda: c.roles().get(3) == "master", timeout=15)
        print(f"replica promoted {took:.1f} s after its master was killed")
        assert 0 not in c.roles()
        # The client relearns the slot map: every slot is served again, the key with it.
        _wait(lambda: _served(rc, key), timeout=10)
        assert rc.get(key) == b"kept"
        # Back with its identity: it rejoins as the replica of the node that took over.
        c.restart(0)
        c.wait_healthy(30)
        assert c.roles()[0] == "slave" and c.roles()[3] == "master"
        assert _role(c.ports[0]) == ("slave", c.ports[3])
        assert redis.Redis(port=c.ports[3]).execute_command("WAIT", 1, 2000) == 1
    finally:
        rc.close()
        c.stop()
    assert redis_server_pids(c.ports) == []


def _served(rc: redis.RedisCluster, key: str) -> bool:
    try:
        rc.get(key)
    except (redis.exceptions.RedisError, redis.exceptions.RedisClusterException):
        return False
    return True
