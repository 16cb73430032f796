"""What every bench reports for `make bench` (bench/run_all.py writes docs/performance.md).

A bench calls ``emit`` with its figures once measured; when BENCH_REPORT names a file, they
are appended to it as JSON lines. Run alone, a bench prints as before and emits nothing.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Figure:
    bench: str  # the script, e.g. "gateway_vs_postfix"
    label: str  # what was measured, in French
    ours: float
    unit: str
    baseline: float | None = None  # measured in the same run
    baseline_label: str = ""
    goal: str = ""  # as the issue states it, e.g. ">= 1.0x Postfix"
    met: bool | None = None
    ratio: float | None = None  # ours / baseline, or as the goal defines it

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def emit(*figures: Figure) -> None:
    path = os.environ.get("BENCH_REPORT")
    if not path:
        return
    with open(path, "a", encoding="utf-8") as handle:
        for figure in figures:
            handle.write(json.dumps(figure.as_dict(), ensure_ascii=False) + "\n")
