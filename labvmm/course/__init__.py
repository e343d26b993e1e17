"""What labvmm's notebooks and graded assignments (assignments/ in the repository) use beyond the core.

- `checks`: the helpers the assignments' test cells share: run a guest to its end, read the
  figures a guest prints; `disks`: the `disk` guest's test-pattern images;
- `traplog`: a log of every trap labvmm handles for a VM, with the registers at the trap;
- `pagetables`: a guest's Sv39/Sv48/Sv57 tables walked from outside; `symbols`: function
  names for guest addresses from an ELF symbol table;
- `realos`: xv6, U-Boot and Linux for the notebooks, or why this machine cannot boot them;
- `xv6trace`: the record of an xv6 run's system calls that the syscall-trace assignment reads
  (one ships in the package).

A released assignment needs nothing but `pip install labvmm[lab]`: the guests, the guest
runtime and these helpers ship in the package.
"""
