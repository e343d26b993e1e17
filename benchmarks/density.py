"""Density: many tiny VMs on one host, creation time and resident memory per VM.

Resident memory is measured in a fresh Python process per attempt, so nothing an earlier
benchmark left behind (translated code, freed-but-kept heap) blurs the baseline. The child
warms up first (imports, labvmm's one-time counter calibration, Unicorn's first instance),
then takes the baseline, creates the VMs one after another (timed), runs each to its `wfi`
(one slice, so every instance has translated code as a live VM would), and reports.

"Beyond its RAM": the resident part of the guest RAM buffer (from /proc/self/smaps) is
subtracted, so what remains is what the VMM and Unicorn cost per VM.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import tempfile
import time

from . import rawguest
from .measure import resident_bytes_of_mapping, rss_bytes, virtual_bytes
from .report import Row

MIB = 1 << 20
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIDES = ("labvmm", "bare", "bare-unicorn-default-tcg")


def _child(side: str, vms: int, vm_mib: int) -> dict:
    """Runs in the fresh process: create `vms` VMs of `vm_mib` MiB on `side`, report figures."""
    from labvmm import Host
    from labvmm.loader import parse_image

    from .bare import RAM_BASE, BareMachine, RamBuffer

    data = rawguest.wfi_loop()
    ram_bytes = vm_mib * MIB
    with tempfile.TemporaryDirectory(prefix="labvmm-bench-") as folder:
        path = os.path.join(folder, "wfi.bin")
        with open(path, "wb") as f:
            f.write(data)
        image = parse_image(data, "wfi", RAM_BASE)
        tcg = None if side == "bare-unicorn-default-tcg" else 32 * MIB

        if side == "labvmm":

            def make_world():
                return Host(memory_mib=vms * vm_mib, quantum=100_000)

            def create(world, i):
                world.create_vm(path, name=f"vm{i}", memory_mib=vm_mib)

            def run_all(world):
                world.run()  # every VM runs to its wfi, then the host is all-idle

            def ram_address(world):
                return world.pool.base_address

        else:

            def make_world():
                return {"ram": RamBuffer(vms * ram_bytes), "machines": []}

            def create(world, i):
                world["machines"].append(BareMachine(image, world["ram"], ram_bytes, None, tcg))

            def run_all(world):
                for m in world["machines"]:
                    m.run_slice(100_000)

            def ram_address(world):
                return world["ram"].address

        warm = make_world()
        create(warm, 0)
        run_all(warm)
        del warm
        gc.collect()

        world = make_world()
        before, virtual_before = rss_bytes(), virtual_bytes()
        each = []
        for i in range(vms):
            started = time.perf_counter()
            create(world, i)
            each.append(time.perf_counter() - started)
        create_seconds = sum(each)
        created = rss_bytes()
        run_all(world)
        ran, virtual_ran = rss_bytes(), virtual_bytes()
        ram_resident = resident_bytes_of_mapping(ram_address(world))
    each.sort()
    out = {
        "side": side,
        "vms": vms,
        "vm_mib": vm_mib,
        "create_ms_per_vm": create_seconds / vms * 1e3,
        "create_ms_median": each[len(each) // 2] * 1e3,
        "create_ms_p90": each[min(len(each) - 1, len(each) * 9 // 10)] * 1e3,
    }
    if None not in (before, created, ran, ram_resident):
        out.update(
            rss_created_mib_per_vm=(created - before) / vms / MIB,
            rss_ran_mib_per_vm=(ran - before) / vms / MIB,
            ram_resident_mib_per_vm=ram_resident / vms / MIB,
            beyond_ram_mib_per_vm=(ran - before - ram_resident) / vms / MIB,
            virtual_mib_per_vm=(virtual_ran - virtual_before) / vms / MIB,
        )
    return out


def measure_side(side: str, vms: int, vm_mib: int) -> dict:
    """Run `_child` for `side` in a fresh interpreter and return its figures."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([ROOT] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    argv = [sys.executable, "-m", "benchmarks.density", side, str(vms), str(vm_mib)]
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"density child {side} failed: {done.stderr[-800:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def density(sizes) -> list[Row]:
    """Creation time and RSS beyond RAM per VM for labvmm, bare Unicorn, and Unicorn's default buffer."""
    vms, vm_mib = sizes.density_vms, sizes.density_vm_mib
    best: dict[str, dict] = {}
    for rep in range(sizes.density_repeats):
        for side in SIDES if rep % 2 == 0 else reversed(SIDES):
            got = measure_side(side, vms, vm_mib)
            keep = best.setdefault(side, dict(got))
            for key, value in got.items():
                if isinstance(value, float):
                    keep[key] = min(keep[key], value)
    lab, bare, default = best["labvmm"], best["bare"], best["bare-unicorn-default-tcg"]
    label = f"{vms} x {vm_mib} MiB VMs"
    rows = [
        Row(
            benchmark=f"density: create {label}, time per VM",
            labvmm=lab["create_ms_per_vm"],
            unit="ms",
            reference=bare["create_ms_per_vm"],
            reference_name="bare Unicorn instance",
            ratio=bare["create_ms_per_vm"] / lab["create_ms_per_vm"],
            target="<= 5",
            target_on="labvmm",
            details={"labvmm": lab, "bare": bare, "bare_unicorn_default_tcg": default},
        )
    ]
    if "beyond_ram_mib_per_vm" in lab:
        rows.append(
            Row(
                benchmark=f"density: {label}, host RSS per VM beyond its RAM",
                labvmm=lab["beyond_ram_mib_per_vm"],
                unit="MiB",
                reference=bare["beyond_ram_mib_per_vm"],
                reference_name="bare Unicorn instance",
                ratio=bare["beyond_ram_mib_per_vm"] / lab["beyond_ram_mib_per_vm"],
                target="<= 4",
                target_on="labvmm",
                details={
                    "labvmm_virtual_mib_per_vm": lab["virtual_mib_per_vm"],
                    "bare_virtual_mib_per_vm": bare["virtual_mib_per_vm"],
                    "bare_unicorn_default_tcg_virtual_mib_per_vm": default["virtual_mib_per_vm"],
                    "bare_unicorn_default_tcg_mib_per_vm": default["beyond_ram_mib_per_vm"],
                    "bare_unicorn_default_tcg_create_ms_per_vm": default["create_ms_per_vm"],
                },
            )
        )
    return rows


if __name__ == "__main__":
    side_arg, vms_arg, mib_arg = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    if side_arg not in SIDES:
        raise SystemExit(f"side must be one of {SIDES}, got {side_arg!r}")
    print(json.dumps(_child(side_arg, vms_arg, mib_arg)))
