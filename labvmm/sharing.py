"""Pages shared between VMs on purpose, as Xen's grant tables or QEMU's ivshmem give two guests.

`PageSharing` is the page-sharing side of `labvmm.host.Host` (a base class of it): the frame
pool records who uses a shared frame, each VM's GuestMemory which frame backs each page,
and each VM's CPU maps it; these methods keep the three in step, all or nothing.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .errors import ConfigError, GuestMemoryError
from .isolation import audit_frames
from .memory import PAGE_SIZE
from .vm import VM


class SharedPage(NamedTuple):
    """One frame mapped into a second VM on purpose (`Host.share_pages`), as `Host.shares` lists them."""

    frame: int  # host frame number
    owner: str  # the VM accountable for the frame (it allocated it, or inherited it)
    owner_addr: int  # guest-physical address of the page in the owner
    vm: str  # the VM it is shared with
    addr: int  # guest-physical address of the page in that VM


class PageSharing:
    """share_pages / unshare_pages / shares / audit_frames of a Host (its `pool` and `vms`)."""

    def share_pages(self, owner, owner_addr: int, other, other_addr: int, pages: int = 1) -> list[SharedPage]:
        """Map `pages` pages of VM `owner`'s RAM into VM `other` as well: shared memory between two VMs.

        From then on the pages at guest-physical `owner_addr` in `owner` and `other_addr` in
        `other` are the same host frames (as Xen's grant tables or QEMU's ivshmem give two
        guests): a store in one VM is seen by loads in the other, and by `read_memory` of
        both. The frames `other` had there go back to the pool, zeroed, and what was on those
        pages is lost. `owner` stays accountable for the shared frames (its `owned_frames`);
        a frame may be shared with several VMs. Destroying a VM keeps its shared frames for
        the VMs still using them. `unshare_pages` gives `other` private zeroed pages back.

        Args: VM names (or VM objects of this host), page-aligned guest-physical addresses
        inside each VM's RAM, and the number of 4 KiB pages (>= 1).
        Returns the SharedPage entries created. Call it between runs (from a running
        `labvmm.widgets.Runner`, through `runner.submit`), never while `run` is in progress.
        Raises ConfigError (unknown VM, the same VM twice, bad page count or alignment, a
        page already shared), GuestMemoryError (a range outside a VM's RAM); nothing
        changes on error.
        """
        owner_vm, other_vm = self._vm_arg("owner", owner), self._vm_arg("other", other)
        if owner_vm is other_vm:
            raise ConfigError(f"cannot share pages of VM {owner_vm.name!r} with itself; name two different VMs")
        pages = self._check_pages(pages)
        owner_frames = owner_vm.memory.frames_at(self._page_addr("owner_addr", owner_addr, owner_vm, pages), pages)
        old_frames = other_vm.memory.frames_at(self._page_addr("other_addr", other_addr, other_vm, pages), pages)
        for i, frame in enumerate(owner_frames.tolist()):
            holder = int(self.pool.owner[frame])
            if holder != owner_vm.id:
                raise ConfigError(
                    f"page 0x{owner_addr + i * PAGE_SIZE:x} of VM {owner_vm.name!r} is frame {frame}, which VM "
                    f"{self._vm_name(holder)!r} owns and shares with it; share it from {self._vm_name(holder)!r}"
                )
        for i, frame in enumerate(old_frames.tolist()):
            users = self.pool.users(frame)
            if len(users) > 1:
                raise ConfigError(
                    f"page 0x{other_addr + i * PAGE_SIZE:x} of VM {other_vm.name!r} is already shared (frame {frame}, "
                    f"used by {', '.join(repr(self._vm_name(u)) for u in users)}); unshare it first"
                )
        size = pages * PAGE_SIZE
        self.pool.share(owner_frames, owner_vm.id, other_vm.id)
        try:
            other_vm.memory.remap(other_addr, owner_frames)
            other_vm.remap_memory(other_addr, size)
        except BaseException:
            other_vm.memory.remap(other_addr, old_frames)
            other_vm.remap_memory(other_addr, size)
            self.pool.unshare(owner_frames, other_vm.id)
            raise
        self.pool.release_frames(other_vm.id, old_frames)
        return [
            SharedPage(int(f), owner_vm.name, owner_addr + i * PAGE_SIZE, other_vm.name, other_addr + i * PAGE_SIZE)
            for i, f in enumerate(owner_frames.tolist())
        ]

    def unshare_pages(self, vm, addr: int, pages: int = 1) -> int:
        """End the sharing of `pages` pages at `addr` in `vm`, which maps them from another VM.

        `vm` gets fresh zeroed private frames there (the owner keeps its frames and their
        contents), so the VM needs free frames in the pool. Unshare on the side that
        received the pages: the owner's side has nothing to give back. Returns the number of
        frames taken from the pool. Raises ConfigError (bad VM, count, alignment, or a page
        `vm` does not map from another VM), GuestMemoryError (outside its RAM),
        OutOfMemoryError (not enough free frames); nothing changes on error.
        """
        vm = self._vm_arg("vm", vm)
        pages = self._check_pages(pages)
        shared = vm.memory.frames_at(self._page_addr("addr", addr, vm, pages), pages)
        for i, frame in enumerate(shared.tolist()):
            users = self.pool.users(frame)
            if self.pool.owner[frame] == vm.id:
                others = ", ".join(repr(self._vm_name(u)) for u in users[1:])
                detail = f"it owns frame {frame}; unshare it in the VMs it is shared with: {others}" if others else "it is private"
                raise ConfigError(f"page 0x{addr + i * PAGE_SIZE:x} of VM {vm.name!r} is not mapped from another VM ({detail})")
        runs = self.pool.allocate(vm.id, pages, addr)  # OutOfMemoryError before anything changed
        fresh = [f for r in runs for f in range(r.first_frame, r.first_frame + r.frames)]
        self.pool.unshare(shared, vm.id)
        vm.memory.remap(addr, fresh)
        vm.remap_memory(addr, pages * PAGE_SIZE)
        return pages

    def shares(self) -> list[SharedPage]:
        """Every page shared between two VMs, by frame, then by the VM it is shared with."""
        table = self.pool.shares()
        if not table:
            return []
        frames = np.fromiter(table, dtype=np.int64)
        where: dict[tuple[int, int], int] = {}  # (vm id, frame) -> guest address
        by_id = {vm.id: vm for vm in self.vms.values()}
        for vm in by_id.values():
            page_frames = vm.memory.page_frames()
            for index in np.flatnonzero(np.isin(page_frames, frames)).tolist():
                where[(vm.id, int(page_frames[index]))] = vm.memory.base + index * PAGE_SIZE
        out = []
        for frame, users in table.items():
            owner = users[0]
            for user in users[1:]:
                out.append(SharedPage(frame, by_id[owner].name, where[(owner, frame)], by_id[user].name, where[(user, frame)]))
        return out

    def audit_frames(self) -> list[str]:
        """Check that every VM reaches only its own frames and those shared with it; the problems found (none: [])."""
        return audit_frames(self.pool, [(vm.name, vm.id, vm.memory) for vm in self.vms.values()])

    def _vm_arg(self, what: str, value) -> VM:
        if isinstance(value, VM):
            if self.vms.get(value.name) is not value:
                raise ConfigError(f"{what}: VM {value.name!r} is not a VM of this host (destroyed, or another host's)")
            return value
        if not isinstance(value, str):
            raise ConfigError(f"{what} must be a VM name (or a VM of this host), got {type(value).__name__} {value!r}")
        return self.vm(value)

    def _vm_name(self, vm_id: int) -> str:
        return next((vm.name for vm in self.vms.values() if vm.id == vm_id), f"VM {vm_id}")

    @staticmethod
    def _check_pages(pages) -> int:
        if isinstance(pages, bool) or not isinstance(pages, int) or pages < 1:
            raise ConfigError(f"pages must be a positive integer (4 KiB pages), got {pages!r}")
        return pages

    @staticmethod
    def _page_addr(what: str, addr, vm: VM, pages: int) -> int:
        if isinstance(addr, bool) or not isinstance(addr, int):
            raise ConfigError(f"{what} must be an integer guest-physical address, got {type(addr).__name__} {addr!r}")
        if addr % PAGE_SIZE:
            raise ConfigError(f"{what} 0x{addr:x} is not 4 KiB page aligned (expected a multiple of 0x1000)")
        if not vm.memory.contains(addr, pages * PAGE_SIZE):
            raise GuestMemoryError(
                f"{what}: {pages} page(s) at 0x{addr:x} reach outside VM {vm.name!r}'s RAM "
                f"0x{vm.memory.base:x}-0x{vm.memory.end:x}"
            )
        return addr


__all__ = ["PageSharing", "SharedPage"]
