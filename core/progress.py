"""One line on stderr per step of a long computation that has no bar of its own.

The volatility fits take tens of seconds on a cold cache (one GARCH variant after another);
a silent terminal for that long looks like a hang. Lines, not a redrawn bar: they read the
same in a terminal, in ``ray job logs`` and in a CI log.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO


def vol_fit_progress(stream: TextIO | None = None) -> Callable[[str | None, int, int], None]:
    """A ``progress(variant, i, n)`` callback for ``build_vol_table`` that prints
    ``volatility: fitting egarch (2/3)…`` and, at the end, the time taken."""
    started = time.perf_counter()

    def report(variant: str | None, i: int, n: int) -> None:
        out = stream or sys.stderr
        if variant is None:
            print(f"volatility: {n} models fitted in {time.perf_counter() - started:.1f} s "
                  f"(cached for the next run)", file=out, flush=True)
        else:
            print(f"volatility: fitting {variant} ({i + 1}/{n})…", file=out, flush=True)

    return report
