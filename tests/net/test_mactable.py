"""Tests for labvmm.net.mactable: the filtering database of IEEE 802.1D-2004 section 7.9, bounded."""

from __future__ import annotations

import pytest

from labvmm.errors import ConfigError
from labvmm.net.mactable import MacTable


def mac(n: int) -> bytes:
    return bytes([0x52, 0x54, 0, 0, 0, n])


def test_a_learned_mac_is_found_behind_its_port_until_it_ages_out():
    """lookup finds the owner while the entry is younger than ageing_ns, then forgets it."""
    table = MacTable(ageing_ns=100)
    assert table.learn(mac(1), "a", 0)
    assert table.lookup(mac(1), 99) == "a"
    assert table.lookup(mac(1), 100) is None and len(table) == 0 and table.expired == 1


def test_every_frame_refreshes_the_entry():
    """Learning the same MAC on the same port again restarts its ageing."""
    table = MacTable(ageing_ns=100)
    table.learn(mac(1), "a", 0)
    table.learn(mac(1), "a", 90)
    assert table.lookup(mac(1), 150) == "a"


def test_a_mac_seen_behind_another_port_moves_there():
    """The entry follows the station; the old port's share goes down."""
    table = MacTable()
    table.learn(mac(1), "a", 0)
    table.learn(mac(1), "b", 1)
    assert table.lookup(mac(1), 2) == "b"
    assert (table.learned_by("a"), table.learned_by("b"), table.moves) == (0, 1, 1)


def test_a_port_gets_at_most_its_share_and_expired_entries_make_room():
    """Past per_port entries learning fails; once old entries age out it succeeds again."""
    table = MacTable(size=10, per_port=2, ageing_ns=100)
    assert table.learn(mac(1), "a", 0) and table.learn(mac(2), "a", 0)
    assert not table.learn(mac(3), "a", 50)
    assert table.learn(mac(4), "b", 50)
    assert table.learn(mac(3), "a", 100)  # mac 1 and 2 expired at 100
    assert table.learned_by("a") == 1


def test_the_whole_table_is_bounded():
    """A new MAC is refused when `size` entries exist, whatever port it comes from."""
    table = MacTable(size=2, per_port=2)
    table.learn(mac(1), "a", 0)
    table.learn(mac(2), "b", 0)
    assert not table.learn(mac(3), "c", 0)
    assert table.learn(mac(1), "a", 1)  # an existing entry is still refreshed


def test_forget_owner_removes_only_that_ports_entries():
    """When a port goes, its MACs go with it."""
    table = MacTable()
    table.learn(mac(1), "a", 0)
    table.learn(mac(2), "b", 0)
    table.forget_owner("a")
    assert table.entries() == [(mac(2), "b", 0)] and table.learned_by("a") == 0


def test_bounds_must_be_positive_integers():
    """Each bound is checked and named."""
    with pytest.raises(ConfigError, match="macs_per_port must be a positive integer, got 0"):
        MacTable(per_port=0)
