"""Benchmark results as rows: one markdown table for people, plain data for `--json`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class Row:
    """One line of the table: labvmm's figure, the reference's, their ratio, and the target.

    `ratio` is always "higher is better for labvmm": reference time / labvmm time for rates
    and costs (so 0.95 means labvmm is 5% slower). `target` applies to `ratio` when
    `target_on` is "ratio" and to the labvmm figure itself when it is "labvmm".
    """

    benchmark: str
    labvmm: float
    unit: str
    reference: float | None = None
    reference_name: str = ""
    ratio: float | None = None
    target: str = ""  # e.g. ">= 0.95" or "<= 5"; empty: no target, reported only
    target_on: str = "ratio"
    details: dict = field(default_factory=dict)

    @property
    def met(self) -> bool | None:
        """Whether the target is met (None without a target or a figure to judge)."""
        if not self.target:
            return None
        value = self.ratio if self.target_on == "ratio" else self.labvmm
        if value is None:
            return None
        op, limit = self.target.split()
        return value >= float(limit) if op == ">=" else value <= float(limit)

    def as_dict(self) -> dict:
        """Plain data for --json (the `met` verdict included)."""
        return {**asdict(self), "met": self.met}


def _num(value: float | None) -> str:
    if value is None:
        return "n/a"
    if value == 0 or abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}" if abs(value) < 1 else f"{value:.2f}"


def markdown_table(rows: list[Row]) -> str:
    """The results as a markdown table: benchmark | labvmm | reference | ratio | target | met?"""
    lines = [
        "| benchmark | labvmm | reference | ratio | target | met? |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        ref = "n/a" if r.reference is None else f"{_num(r.reference)} {r.unit} ({r.reference_name})"
        if r.target:
            target = f"{r.target} {r.unit}" if r.target_on == "labvmm" else f"ratio {r.target}"
        else:
            target = "none (reported)"
        met = {True: "yes", False: "**no**", None: "-"}[r.met]
        ratio = "n/a" if r.ratio is None else f"{r.ratio:.3f}"
        lines.append(f"| {r.benchmark} | {_num(r.labvmm)} {r.unit} | {ref} | {ratio} | {target} | {met} |")
    return "\n".join(lines)
