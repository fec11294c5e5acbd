"""feeds.store.topology.topology_from: what /metrics shows of a cluster's shape, before and
after a failover (a master failed, its replica promoted and left without a replica)."""

from __future__ import annotations

from feeds.store.topology import topology_from

INFO = {"cluster_state": "ok", "cluster_slots_ok": "16384", "cluster_current_epoch": "6"}


def _node(node_id: str, flags: str, master_id: str = "-", slots=()) -> dict:
    return {"node_id": node_id, "flags": flags, "master_id": master_id, "slots": list(slots)}


def test_a_healthy_cluster_has_a_replica_behind_every_master():
    nodes = {
        "a:1": _node("A", "master", slots=[["0", "8191"]]),
        "b:1": _node("B", "master", slots=[["8192", "16383"]]),
        "c:1": _node("C", "slave", "A"),
        "d:1": _node("D", "slave", "B"),
    }
    assert topology_from(nodes, INFO) == {
        "masters": 2,
        "replicas": 2,
        "failed": 0,
        "masters_without_replica": 0,
        "slots_ok": 16384,
        "epoch": 6,
        "state_ok": True,
    }


def test_after_a_failover_the_promoted_replica_has_none_until_the_lost_node_rejoins():
    nodes = {
        "a:1": _node("A", "master,fail"),  # lost; its slots moved to C
        "b:1": _node("B", "master", slots=[["8192", "16383"]]),
        "c:1": _node("C", "master", slots=[["0", "8191"]]),
        "d:1": _node("D", "slave", "B"),
    }
    got = topology_from(nodes, {**INFO, "cluster_current_epoch": "7"})
    assert (got["masters"], got["replicas"], got["failed"]) == (2, 1, 1)
    assert got["masters_without_replica"] == 1 and got["epoch"] == 7
    nodes["a:1"] = _node("A", "slave", "C")  # restarted: rejoins as C's replica
    assert topology_from(nodes, INFO)["masters_without_replica"] == 0
