"""What an operator needs to see of a Redis Cluster's shape in /metrics: masters, replicas,
failed nodes, masters left without a replica (after a failover, until the lost node rejoins),
slots served and the current epoch (a failover raises it)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import redis

from .connection import client, is_cluster


def topology_from(nodes: Mapping[str, Mapping[str, Any]], info: Mapping[str, str]) -> dict:
    """The figures of a cluster from CLUSTER NODES (as redis-py parses it: address -> flags,
    master_id, node_id, connected) and CLUSTER INFO. Pure."""
    flags = {addr: set(str(n.get("flags", "")).split(",")) for addr, n in nodes.items()}
    failed = {addr for addr, f in flags.items() if f & {"fail", "fail?"}}
    masters = {
        str(n["node_id"]): addr
        for addr, n in nodes.items()
        if "master" in flags[addr] and addr not in failed and n.get("slots")
    }
    served = {
        str(n.get("master_id"))
        for addr, n in nodes.items()
        if "slave" in flags[addr] and addr not in failed
    }
    return {
        "masters": len(masters),
        "replicas": sum(1 for addr in nodes if "slave" in flags[addr] and addr not in failed),
        "failed": len(failed),
        "masters_without_replica": sum(1 for node_id in masters if node_id not in served),
        "slots_ok": int(info.get("cluster_slots_ok", 0)),
        "epoch": int(info.get("cluster_current_epoch", 0)),
        "state_ok": info.get("cluster_state") == "ok",
    }


def cluster_topology() -> dict | None:
    """topology_from the cluster as one node sees it now; None on one Redis or when no node
    answers."""
    if not is_cluster():
        return None
    c: Any = client()
    try:
        return topology_from(c.cluster_nodes(), c.cluster_info())
    except redis.exceptions.RedisError:
        return None
