"""feeds.store.pubsub_nodes: where the stream gateway may listen after its node is lost."""

from __future__ import annotations

from feeds.store.pubsub_nodes import node_addresses

NODES = """\
07c3 127.0.0.1:30001@40001 myself,master - 0 0 1 connected 0-5460
67ed 127.0.0.1:30002@40002 master - 0 1426238316232 2 connected 5461-10922
292f 127.0.0.1:30003@40003 master,fail - 1426238317239 1426238316232 3 disconnected
e7d1 127.0.0.1:30006@40006 slave 292f 0 1426238316232 7 connected 10923-16383
6ec2 127.0.0.1:30005@40005 slave,fail? 67ed 0 1426238318243 3 connected
824f :0@0 master,noaddr - 1426238316232 0 4 disconnected
"""


def test_the_nodes_that_are_not_failing_in_the_replys_order():
    assert node_addresses(NODES, ("127.0.0.1", 30001)) == [
        ("127.0.0.1", 30001),
        ("127.0.0.1", 30002),
        ("127.0.0.1", 30006),
    ]


def test_a_node_that_does_not_know_its_own_address_is_the_one_asked():
    reply = b"07c3 :30001@40001 myself,master - 0 0 1 connected 0-16383\n"
    assert node_addresses(reply, ("10.0.0.7", 30001)) == [("10.0.0.7", 30001)]
