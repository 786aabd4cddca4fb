"""The genome schema: a fixed-length float64 vector whose every position is a named, typed gene.

Layout (K condition slots per rule set, default 4):

- ``long``, ``short``, ``exit`` rule sets: ``logic`` (AND/OR) then K slots of
  ``on, prim, param, cmp, rhs, thr, param2``. A slot compares feature (prim, param) with a
  threshold (``rhs`` = 0; ``thr`` in [0, 1] maps onto the primitive's range) or with the same
  primitive at another parameter (``rhs`` = 1, e.g. SMA(10) vs SMA(50)). ``cmp``: 0 ``>``,
  1 ``<``, 2 crosses above, 3 crosses below.
- ``regime``: per regime (calm, normal, storm) 0 off (no new entries), 1 follow, 2 fade
  (long rules open shorts and short rules open longs).
- ``session``: UTC start and end hour of the trading window (start == end: all day) and one
  on/off gene per weekday.
- ``risk``: stop = k_stop × σ̂ (in price), optional take-profit = tp_mult × stop, optional
  trailing stop, optional maximum bars held, risk per trade 0.1-1 % of equity.
- ``vol``: blend weight w of σ̂² = w·σ²_variant + (1-w)·RV(window), the RV window (index into
  the realised-variance grid), the GARCH variant and the annualised regime thresholds.

Integer and categorical genes hold whole numbers stored as floats. The offsets below are module
constants, so numba kernels read genes by plain integer index.
"""

from __future__ import annotations

from dataclasses import dataclass

from genome.primitives import MAX_GRID, PRIMITIVES
from market.volatility import GARCH_VARIANTS, RV_WINDOWS

SCHEMA_VERSION = 1
K_SLOTS = 4
RULE_SETS = ("long", "short", "exit")
SLOT_FIELDS = ("on", "prim", "param", "cmp", "rhs", "thr", "param2")
CMP_TEXT = (">", "<", "crosses above", "crosses below")
REGIMES = ("calm", "normal", "storm")
REGIME_MODES = ("off", "follow", "fade")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True)
class Gene:
    name: str
    kind: str  # "cont", "int" or "cat"
    lo: float
    hi: float
    section: str
    choices: tuple[str, ...] = ()
    doc: str = ""


def _rule_set_genes(rs: str) -> list[Gene]:
    genes = [Gene(f"{rs}.logic", "cat", 0, 1, rs, ("AND", "OR"), "how the slots combine")]
    for k in range(K_SLOTS):
        p = f"{rs}.s{k}"
        genes += [
            Gene(f"{p}.on", "cat", 0, 1, rs, ("off", "on"), "slot enabled"),
            Gene(f"{p}.prim", "cat", 0, len(PRIMITIVES) - 1, rs,
                 tuple(pr.name for pr in PRIMITIVES), "primitive id"),
            Gene(f"{p}.param", "int", 0, MAX_GRID - 1, rs, (), "index into the primitive's grid"),
            Gene(f"{p}.cmp", "cat", 0, 3, rs, CMP_TEXT, "comparator"),
            Gene(f"{p}.rhs", "cat", 0, 1, rs, ("threshold", "param2"), "right-hand side"),
            Gene(f"{p}.thr", "cont", 0.0, 1.0, rs, (), "threshold, mapped onto the primitive's range"),
            Gene(f"{p}.param2", "int", 0, MAX_GRID - 1, rs, (), "grid index of the right-hand side"),
        ]
    return genes


def _build() -> tuple[Gene, ...]:
    genes: list[Gene] = []
    for rs in RULE_SETS:
        genes += _rule_set_genes(rs)
    genes += [Gene(f"regime.{r}", "cat", 0, 2, "regime", REGIME_MODES, f"mode in {r} regime")
              for r in REGIMES]
    genes += [
        Gene("session.start_hour", "int", 0, 23, "session", (), "window start, UTC hour"),
        Gene("session.end_hour", "int", 0, 23, "session", (), "window end (exclusive), UTC hour"),
    ]
    genes += [Gene(f"session.{d}", "cat", 0, 1, "session", ("off", "on"), f"trade on {d}")
              for d in WEEKDAYS]
    genes += [
        Gene("risk.k_stop", "cont", 0.5, 8.0, "risk", (), "stop distance in σ̂ units"),
        Gene("risk.use_tp", "cat", 0, 1, "risk", ("off", "on"), "take-profit enabled"),
        Gene("risk.tp_mult", "cont", 0.5, 10.0, "risk", (), "take-profit as a multiple of the stop"),
        Gene("risk.trail", "cat", 0, 1, "risk", ("off", "on"), "trailing stop"),
        Gene("risk.use_max_bars", "cat", 0, 1, "risk", ("off", "on"), "time exit enabled"),
        Gene("risk.max_bars", "int", 1, 500, "risk", (), "maximum bars held"),
        Gene("risk.risk_pct", "cont", 0.001, 0.01, "risk", (), "equity fraction risked per trade"),
        Gene("vol.blend_weight", "cont", 0.0, 1.0, "vol", (), "weight of the GARCH variance"),
        Gene("vol.rv_window", "cat", 0, len(RV_WINDOWS) - 1, "vol",
             tuple(str(w) for w in RV_WINDOWS), "realised-variance window (bars)"),
        Gene("vol.garch_variant", "cat", 0, len(GARCH_VARIANTS) - 1, "vol", GARCH_VARIANTS,
             "conditional-variance model (ginn: the GINN forecast where the tables have a "
             "model, else GARCH(1,1)'s)"),
        Gene("vol.calm_below", "cont", 0.02, 0.30, "vol", (), "annualised σ̂ below which: calm"),
        Gene("vol.storm_above", "cont", 0.05, 0.80, "vol", (), "annualised σ̂ above which: storm"),
    ]
    return tuple(genes)


GENES: tuple[Gene, ...] = _build()
N_GENES = len(GENES)
INDEX: dict[str, int] = {g.name: i for i, g in enumerate(GENES)}
SECTIONS: tuple[str, ...] = tuple(dict.fromkeys(g.section for g in GENES))

# ---- offsets for kernels (plain ints: numba treats module globals as constants) --------------
SLOT_WIDTH = len(SLOT_FIELDS)
RULE_SET_WIDTH = 1 + K_SLOTS * SLOT_WIDTH
LONG0 = INDEX["long.logic"]
SHORT0 = INDEX["short.logic"]
EXIT0 = INDEX["exit.logic"]
REGIME0 = INDEX["regime.calm"]
SESSION_START = INDEX["session.start_hour"]
SESSION_END = INDEX["session.end_hour"]
WEEKDAY0 = INDEX["session.mon"]
K_STOP = INDEX["risk.k_stop"]
USE_TP = INDEX["risk.use_tp"]
TP_MULT = INDEX["risk.tp_mult"]
TRAIL = INDEX["risk.trail"]
USE_MAX_BARS = INDEX["risk.use_max_bars"]
MAX_BARS = INDEX["risk.max_bars"]
RISK_PCT = INDEX["risk.risk_pct"]
BLEND_W = INDEX["vol.blend_weight"]
RV_WIN = INDEX["vol.rv_window"]
VARIANT = INDEX["vol.garch_variant"]
CALM_BELOW = INDEX["vol.calm_below"]
STORM_ABOVE = INDEX["vol.storm_above"]


def slot_offset(rule_set: int, slot: int) -> int:
    """Index of a slot's ``on`` gene; rule_set 0 long, 1 short, 2 exit."""
    return rule_set * RULE_SET_WIDTH + 1 + slot * SLOT_WIDTH
