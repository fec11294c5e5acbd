"""Throttle buckets of client addresses: rotating through one IPv6 /64 or adding a port does not
make a new bucket."""

from __future__ import annotations

from feedsite.addresses import address_bucket


def test_ipv6_counts_as_its_64_and_ipv4_as_itself():
    a = address_bucket("2001:db8:1:2::1")
    assert a == "2001:db8:1:2::/64"
    assert address_bucket("2001:db8:1:2:ffff:ffff:ffff:ffff") == a
    assert address_bucket("[2001:db8:1:2::9]:443") == a
    assert address_bucket("2001:db8:1:3::1") != a
    assert address_bucket("203.0.113.7") == "203.0.113.7"
    assert address_bucket("203.0.113.7:5555") == "203.0.113.7"
    assert address_bucket("::ffff:203.0.113.7") == "203.0.113.7"
    assert address_bucket("203.0.113.8") != address_bucket("203.0.113.7")
    assert address_bucket("") == "" and address_bucket("not-an-ip") == "not-an-ip"
