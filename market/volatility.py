"""Volatility features (Tier 0). Constants shared with the genome's volatility genes."""

from __future__ import annotations

GARCH_VARIANTS = ("garch11", "egarch", "gjr", "ewma")
RV_WINDOWS = (5, 10, 20, 60)  # bars; realised variance is kept per bar (sum of r² / window)
