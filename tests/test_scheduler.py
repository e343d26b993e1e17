"""Scheduling policies: round-robin, credit (Xen semantics) and shares (vSphere semantics).

Shares are measured from the scheduler timeline over 30 M instructions of virtual time; the
issue's criterion is +/-1 % (absolute) of the target. Everything is deterministic, so these
are exact checks of the policy, not timing measurements.
"""

from __future__ import annotations

import pytest

from labvmm import ConfigError, Credit, Host, RoundRobin, Shares, VMState
from labvmm.scheduler import PERIOD_INSNS, make_policy

RUN = 30_000_000
TOLERANCE = 0.01


def compute_host(policy: str, n: int = 3) -> Host:
    """A host with `n` CPU-bound compute VMs (c0, c1, ...) that never finish within RUN."""
    host = Host(memory_mib=256)
    host.set_policy(policy)
    for i in range(n):
        host.create_vm("compute", name=f"c{i}", memory_mib=16, params={"iterations": 100_000_000})
    return host


def assert_shares(shares: dict[str, float], expected: dict[str, float]) -> None:
    for name, want in expected.items():
        assert abs(shares[name] - want) <= TOLERANCE, (name, shares[name], want)


def test_round_robin_gives_equal_vms_equal_shares():
    """Round-robin over three equal VMs gives each a third of the CPU, within 1 %."""
    host = compute_host("round-robin")
    host.run(max_insns=RUN)
    assert_shares(host.cpu_shares(), {"c0": 1 / 3, "c1": 1 / 3, "c2": 1 / 3})


def test_credit_weights_1_2_4_give_shares_1_2_4_sevenths():
    """Credit weights 1:2:4 over 30 M instructions give 1/7, 2/7 and 4/7 of the CPU, within 1 %."""
    host = compute_host("credit")
    for name, weight in (("c0", 1), ("c1", 2), ("c2", 4)):
        host.configure_vm(name, weight=weight)
    host.run(max_insns=RUN)
    assert_shares(host.cpu_shares(), {"c0": 1 / 7, "c1": 2 / 7, "c2": 4 / 7})


def test_credit_default_weight_is_256_and_512_gets_twice_as_much():
    """Xen's default weight is 256; a VM of weight 512 gets twice the CPU of one at 256."""
    host = compute_host("credit", n=2)
    assert host.configure_vm("c0") == {"weight": 256, "cap": 0}
    host.configure_vm("c1", weight=512)
    host.run(max_insns=RUN)
    assert_shares(host.cpu_shares(), {"c0": 1 / 3, "c1": 2 / 3})


def test_a_credit_cap_holds_while_the_other_vms_are_idle():
    """A 25 % cap holds within 1 % although the CPU is otherwise unused (not work-conserving past a cap)."""
    host = compute_host("credit")
    host.configure_vm("c0", cap=25)
    host.vm("c1").pause()
    host.vm("c2").pause()
    result = host.run(max_insns=RUN)
    assert_shares(host.cpu_shares(), {"c0": 0.25, "c1": 0.0, "c2": 0.0})
    assert result.idle_insns == pytest.approx(0.75 * RUN, rel=0.01)


def test_a_capped_vm_among_busy_ones_gives_its_excess_to_them():
    """With a 10 % cap on one of three equal VMs, the other two share the remaining 90 %."""
    host = compute_host("credit")
    host.configure_vm("c0", cap=10)
    host.run(max_insns=RUN)
    assert_shares(host.cpu_shares(), {"c0": 0.10, "c1": 0.45, "c2": 0.45})


def test_an_idle_vm_gets_nothing_and_its_share_goes_to_the_others():
    """A VM waiting in wfi gets ~0 % (work-conserving) and runs as soon as its timer fires."""
    host = Host(memory_mib=256)
    host.set_policy("credit")
    for i in range(2):
        host.create_vm("compute", name=f"c{i}", memory_mib=16, params={"iterations": 100_000_000})
    timer = host.create_vm("timer", memory_mib=16, params={"ticks": 3, "interval": 500_000})
    host.run(max_insns=RUN)
    shares = host.cpu_shares()
    assert shares["timer"] < 0.001
    assert_shares(shares, {"c0": 0.5, "c1": 0.5})
    assert timer.state == VMState.HALTED and "tick 3" in timer.console_text()
    # Each time the timer VM wakes, the slice before it was cut short at the very instant its
    # interrupt became due (the event ends every VM's slice), and the timer VM ran next.
    timeline = list(host.timeline)
    wakes = [i for i, s in enumerate(timeline) if s.vm == "timer" and i and timeline[i - 1].vm != "timer"]
    assert len(wakes) >= 3
    cut_by_its_timer = [
        i for i in wakes
        if timeline[i - 1].instructions < host.quantum and timeline[i].start % PERIOD_INSNS != 0
    ]
    assert len(cut_by_its_timer) >= 3


def test_changing_a_weight_mid_run_changes_shares_from_the_next_slice():
    """Weights 1:1 then 3:1: the timeline shows the new split right after the change."""
    host = compute_host("credit", n=2)
    host.run(max_insns=10_000_000)
    changed_at = host.clock
    assert_shares(host.cpu_shares(), {"c0": 0.5, "c1": 0.5})
    host.configure_vm("c0", weight=3 * 256)
    host.run(max_insns=20_000_000)
    assert_shares(host.cpu_shares(since=changed_at), {"c0": 0.75, "c1": 0.25})
    after = [s for s in host.timeline if s.start >= changed_at]
    assert after[0].start == changed_at


def test_vsphere_shares_high_normal_low_give_4_2_1():
    """Shares high/normal/low = 2000/1000/500 divide the CPU 4:2:1."""
    host = compute_host("shares")
    for name, level in (("c0", "high"), ("c1", "normal"), ("c2", "low")):
        host.configure_vm(name, shares=level)
    host.run(max_insns=RUN)
    assert_shares(host.cpu_shares(), {"c0": 4 / 7, "c1": 2 / 7, "c2": 1 / 7})


def test_a_reservation_is_met_before_shares_and_a_limit_holds():
    """A 50 % reservation on the low-shares VM is met first; a 20 % limit on the high one holds."""
    host = compute_host("shares")
    for name, level in (("c0", "high"), ("c1", "normal"), ("c2", "low")):
        host.configure_vm(name, shares=level)
    host.configure_vm("c2", reservation=50_000_000)  # instructions per virtual second = 50 %
    host.configure_vm("c0", limit=20_000_000)  # 20 %
    host.run(max_insns=RUN)
    assert_shares(host.cpu_shares(), {"c0": 0.20, "c1": 0.30, "c2": 0.50})


def test_changing_the_policy_mid_run_takes_effect_at_once():
    """Switching from round-robin to credit with weights changes the split from then on."""
    host = compute_host("round-robin", n=2)
    host.run(max_insns=5_000_000)
    switched = host.clock
    host.set_policy("credit")
    host.configure_vm("c1", weight=768)
    host.run(max_insns=20_000_000)
    assert_shares(host.cpu_shares(since=switched), {"c0": 0.25, "c1": 0.75})


def test_a_student_policy_plugs_in():
    """Any object with the Policy methods can schedule: here, always the VM with the lowest id."""

    class Lowest:
        name = "lowest-first"

        def pick(self, ready, usage):
            return min(ready, key=lambda vm: vm.id)

        def charge(self, vm, retired):
            pass

        def wake(self, vm, ready):
            pass

        def allowance(self, vm, period_insns):
            return None

        def target_share(self, vm, vms):
            return None

    host = compute_host("round-robin", n=2)
    host.set_policy(Lowest())
    host.run(max_insns=5_000_000)
    assert host.cpu_shares() == {"c0": 1.0, "c1": 0.0}


def test_bad_policy_and_parameters_are_refused_by_name():
    """Unknown policies, out-of-range weights, caps, shares and mismatched parameters raise ConfigError."""
    host = compute_host("credit", n=1)
    with pytest.raises(ConfigError, match="unknown scheduling policy 'fifo'"):
        host.set_policy("fifo")
    with pytest.raises(ConfigError, match="needs the methods"):
        host.set_policy(object())
    with pytest.raises(ConfigError, match="weight of VM 'c0' must be an integer 1..65535, got 0"):
        host.configure_vm("c0", weight=0)
    with pytest.raises(ConfigError, match=r"cap \(%\) of VM 'c0' must be an integer 0..100, got 101"):
        host.configure_vm("c0", cap=101)
    with pytest.raises(ConfigError, match="does not take"):
        host.configure_vm("c0", shares="high")
    with pytest.raises(ConfigError, match="no VM named 'nope'"):
        host.configure_vm("nope", weight=2)
    host.set_policy("shares")
    with pytest.raises(ConfigError, match="must be high, normal, low or a number"):
        host.configure_vm("c0", shares="huge")
    with pytest.raises(ConfigError, match="exceeds its limit"):
        host.configure_vm("c0", reservation=50_000_000, limit=10_000_000)
    host.set_policy("round-robin")
    with pytest.raises(ConfigError, match="has no per-VM parameters"):
        host.configure_vm("c0", weight=2)


def test_target_shares_follow_the_policy():
    """target_share is weight over total weight, bounded by the cap, the excess going to the others."""
    host = compute_host("credit")
    vms = list(host.vms.values())
    assert host.policy.target_share(vms[0], vms) == pytest.approx(1 / 3)
    host.configure_vm("c2", weight=512, cap=30)  # 50 % by weight, capped at 30 %: 70 % left for two
    assert host.policy.target_share(vms[0], vms) == pytest.approx(0.35)
    assert host.policy.target_share(vms[2], vms) == pytest.approx(0.30)
    assert host.policy.target_share(vms[2], vms[:2]) is None
    assert RoundRobin().target_share(vms[1], vms) == pytest.approx(1 / 3)
    assert isinstance(make_policy("shares"), Shares) and isinstance(make_policy("rr"), RoundRobin)
    assert isinstance(make_policy("credit"), Credit)


def test_the_period_is_ten_virtual_milliseconds():
    """Caps are accounted per 1,000,000 instructions (10 ms at the nominal 100 MIPS)."""
    assert PERIOD_INSNS == 1_000_000


@pytest.mark.parametrize(
    ("policy", "settings"),
    [
        ("credit", {"c0": {"weight": 1024, "cap": 25}, "c1": {"weight": 256}}),
        ("credit", {"c0": {"cap": 10}, "c1": {"cap": 20}, "c2": {"cap": 30}}),
        ("shares", {"c0": {"shares": "high", "limit": 20_000_000}, "c1": {"shares": "normal"},
                    "c2": {"shares": "low", "reservation": 50_000_000}}),
        ("shares", {"c0": {"shares": "high"}, "c2": {"shares": "low", "reservation": 10_000_000}}),
    ],
    ids=["cap-beats-weight", "all-capped-cpu-idles", "reservation-and-limit", "reservation-below-share"],
)
def test_the_target_share_is_what_the_scheduler_delivers(policy, settings):
    """The target the panels draw (and alarms compare with) is the share each VM gets, within 1 %."""
    host = compute_host(policy)
    for name, params in settings.items():
        host.configure_vm(name, **params)
    host.run(max_insns=RUN)
    vms = list(host.vms.values())
    targets = {vm.name: host.policy.target_share(vm, vms) for vm in vms}
    assert_shares(host.cpu_shares(), targets)
    assert sum(targets.values()) <= 1 + 1e-9


def test_reservations_that_fill_the_cpu_decide_the_targets_whatever_the_shares():
    """Reservations of 30 % and 70 % take the whole CPU: shares no longer matter."""
    host = compute_host("shares", n=2)
    host.configure_vm("c0", reservation=30_000_000, shares="high")
    host.configure_vm("c1", reservation=70_000_000, shares="low")
    vms = list(host.vms.values())
    assert host.policy.target_share(vms[0], vms) == pytest.approx(0.3)
    assert host.policy.target_share(vms[1], vms) == pytest.approx(0.7)


def test_a_rejected_configure_changes_nothing():
    """configure() checks every parameter before applying any: a bad cap leaves the weight alone."""
    credit = Credit()
    credit.configure("a", weight=512)
    with pytest.raises(ConfigError, match="cap"):
        credit.configure("a", weight=1024, cap=101)
    assert credit.params("a") == {"weight": 512, "cap": 0}
    shares = Shares()
    shares.configure("a", limit=50_000_000)
    with pytest.raises(ConfigError, match="exceeds its limit"):
        shares.configure("a", reservation=60_000_000, shares="high")
    assert shares.params("a") == {"shares": 1000, "reservation": 0, "limit": 50_000_000}


def test_reservations_are_admitted_only_while_they_fit_in_the_cpu():
    """Admission control: the sum of reservations never exceeds one CPU; the error says what is left."""
    shares = Shares()
    shares.configure("a", reservation=70_000_000)
    with pytest.raises(ConfigError, match="at most 30000000 is left"):
        shares.configure("b", reservation=60_000_000)
    assert shares.params("b")["reservation"] == 0
    shares.configure("b", reservation=30_000_000)
    shares.configure("a", reservation=60_000_000)  # lowering one's own reservation is fine


def test_destroying_a_vm_makes_the_policy_forget_it(host, make_vm):
    """A new VM with a destroyed VM's name does not inherit its weight or reservation."""
    host.set_policy("shares")
    make_vm("compute", name="a")
    host.configure_vm("a", reservation=80_000_000)
    host.destroy_vm("a")
    make_vm("compute", name="a")
    assert host.policy.params("a")["reservation"] == 0
    make_vm("compute", name="b")
    host.configure_vm("b", reservation=80_000_000)  # a's old reservation no longer counts
