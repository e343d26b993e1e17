"""The switch's filtering database: which port each learned MAC is behind, bounded and ageing.

IEEE 802.1D-2004 section 7.9 (the filtering database): an entry is learned from a frame's
source address, refreshed by every frame from it, moved when the station shows up behind
another port, and removed after the ageing time without a frame (300 s by default, the
Linux bridge's ageing_time). The table holds at most `size` entries and a port at most
`per_port`: once a port has its share, frames from yet another of its MACs are refused, so
a guest spoofing source addresses cannot crowd out the other ports (port security).
"""

from __future__ import annotations

from typing import Generic, TypeVar

from ..checks import positive_int

Owner = TypeVar("Owner")
AGEING_NS = 300 * 1_000_000_000


class MacTable(Generic[Owner]):
    """MAC -> (port, last seen ns), with a bound on the whole table and on each port's share.

    Args:
        size: entries in the whole table.
        per_port: entries one port may have.
        ageing_ns: an entry not refreshed for this long is gone.
    """

    def __init__(self, size: int = 1024, per_port: int = 64, ageing_ns: int = AGEING_NS) -> None:
        self.size = positive_int("mac_table_size", size)
        self.per_port = positive_int("macs_per_port", per_port)
        self.ageing_ns = positive_int("mac_ageing_ns", ageing_ns)
        self._entries: dict[bytes, list] = {}  # MAC -> [owner, last seen ns]
        self._per_owner: dict = {}  # owner -> entries (owners hash by identity)
        self.moves = 0
        self.expired = 0

    def __len__(self) -> int:
        return len(self._entries)

    def learn(self, mac: bytes, owner: Owner, time_ns: int) -> bool:
        """Record that `mac` is behind `owner` at `time_ns`; False if the table or the owner's share is full."""
        entry = self._entries.get(mac)
        if entry is not None and entry[0] is owner:
            entry[1] = time_ns
            return True
        if not self._has_room(owner, entry is None):
            self._expire(time_ns)  # only when full: ageing costs a scan of the table
            entry = self._entries.get(mac)
            if not self._has_room(owner, entry is None):
                return False
        if entry is not None:  # the station moved (or is spoofed) behind this port
            self._count(entry[0], -1)
            self.moves += 1
        self._entries[mac] = [owner, time_ns]
        self._count(owner, +1)
        return True

    def lookup(self, mac: bytes, time_ns: int) -> Owner | None:
        """The owner `mac` was learned behind, or None if unknown or aged out by `time_ns`."""
        entry = self._entries.get(mac)
        if entry is None:
            return None
        if time_ns - entry[1] >= self.ageing_ns:
            self._forget(mac)
            return None
        return entry[0]

    def forget_owner(self, owner: Owner) -> None:
        """Remove every entry behind `owner` (its port was removed)."""
        for mac in [mac for mac, (who, _) in self._entries.items() if who is owner]:
            del self._entries[mac]
        self._per_owner.pop(owner, None)

    def learned_by(self, owner: Owner) -> int:
        """How many entries are behind `owner`."""
        return self._per_owner.get(owner, 0)

    def entries(self) -> list[tuple[bytes, Owner, int]]:
        """Every entry as (MAC, owner, last seen ns), by MAC."""
        return [(mac, owner, seen) for mac, (owner, seen) in sorted(self._entries.items())]

    def _has_room(self, owner: Owner, new_entry: bool) -> bool:
        return self.learned_by(owner) < self.per_port and (not new_entry or len(self._entries) < self.size)

    def _expire(self, time_ns: int) -> None:
        for mac in [mac for mac, (_, seen) in self._entries.items() if time_ns - seen >= self.ageing_ns]:
            self._forget(mac)

    def _forget(self, mac: bytes) -> None:
        owner, _ = self._entries.pop(mac)
        self._count(owner, -1)
        self.expired += 1

    def _count(self, owner: Owner, delta: int) -> None:
        self._per_owner[owner] = self._per_owner.get(owner, 0) + delta
