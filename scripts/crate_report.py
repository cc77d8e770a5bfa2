"""The report the workspace's source checks print (`module-cycles.py`, `external-types.py`).

Per crate: each finding on a line of its own, prefixed by the crate, with the lines that show
it indented below; a crate without findings gets one line saying so. A check's exit status is
1 when any finding of any crate is a failure.
"""
import sys
from dataclasses import dataclass, field
from typing import Callable, Iterable


@dataclass
class Finding:
    """One line of a crate's report."""

    text: str
    failure: bool
    details: list = field(default_factory=list)


def report(crate: str, findings: list, clean: str) -> bool:
    """Prints `crate`'s findings (or `clean` when there are none); True when any is a failure."""
    for finding in findings:
        print(f"{crate}: {finding.text}")
        for line in finding.details:
            print(f"        {line}")
    if not findings:
        print(f"{crate}: {clean}")
    return any(finding.failure for finding in findings)


def run(crates: Iterable, check: Callable[[str], bool]) -> None:
    """Runs `check` (which reports and returns whether it failed) on every crate, then exits."""
    failed = False
    for crate in crates:
        failed |= check(crate)
    sys.exit(1 if failed else 0)
