"""Turn genome vectors into the flat arrays the kernel reads (rows of the feature table,
thresholds in the primitive's units, integer switches), once per batch in plain numpy."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fitness import simulator_nb as k
from fitness.errors import KernelInputError
from genome import schema as s
from genome.features import FeatureTable
from genome.primitives import PRIMITIVES

THR_LO = np.array([p.thr_lo for p in PRIMITIVES])
THR_HI = np.array([p.thr_hi for p in PRIMITIVES])


@dataclass(frozen=True)
class Compiled:
    slots: np.ndarray     # int64 [n, 3, K, 3]: lhs row, rhs row (-1: threshold), comparator
    thr: np.ndarray       # float64 [n, 3, K]
    n_active: np.ndarray  # int64 [n, 3]
    logic: np.ndarray     # int64 [n, 3]
    fp: np.ndarray        # float64 [n, N_FPARAMS]
    ip: np.ndarray        # int64 [n, N_IPARAMS]


def compile_genomes(genomes: np.ndarray, table: FeatureTable) -> Compiled:
    g = np.atleast_2d(np.asarray(genomes, dtype=np.float64))
    if g.shape[1] != s.N_GENES:
        raise KernelInputError(f"genomes have {g.shape[1]} genes; the schema has {s.N_GENES}")
    n = g.shape[0]
    # every slot's genes at once: [n, 3, K, SLOT_WIDTH]; the active slots of a rule set are
    # packed to its front in slot order
    first = np.array([[s.slot_offset(rs, j) for j in range(s.K_SLOTS)] for rs in range(3)])
    genes = g[:, first[..., None] + np.arange(s.SLOT_WIDTH)]
    on, prim, param, cmp, rhs, t, param2 = (genes[..., f] for f in range(s.SLOT_WIDTH))
    on = on.astype(np.int64) == 1
    p = prim.astype(np.int64)[on]
    n_grid = table.grid_len[p]
    k1 = param.astype(np.int64)[on] % n_grid
    k2 = param2.astype(np.int64)[on] % n_grid
    use_rhs = (rhs.astype(np.int64)[on] == 1) & (k2 != k1)
    gi, rs_i, _ = np.nonzero(on)
    dest = (np.cumsum(on, axis=2) - 1)[on]
    slots = np.zeros((n, 3, s.K_SLOTS, 3), np.int64)
    thr = np.zeros((n, 3, s.K_SLOTS))
    slots[gi, rs_i, dest, k.SLOT_LHS] = table.offsets[p] + k1
    slots[gi, rs_i, dest, k.SLOT_RHS] = np.where(use_rhs, table.offsets[p] + k2, -1)
    slots[gi, rs_i, dest, k.SLOT_CMP] = cmp.astype(np.int64)[on]
    thr[gi, rs_i, dest] = THR_LO[p] + t[on] * (THR_HI[p] - THR_LO[p])
    n_active = on.sum(axis=2).astype(np.int64)
    logic = g[:, [s.RULE_SET_WIDTH * rs for rs in range(3)]].astype(np.int64)
    fp = np.zeros((n, k.N_FPARAMS))
    fp[:, k.P_K_STOP] = g[:, s.K_STOP]
    fp[:, k.P_TP_MULT] = g[:, s.TP_MULT]
    fp[:, k.P_RISK] = g[:, s.RISK_PCT]
    fp[:, k.P_BLEND] = g[:, s.BLEND_W]
    fp[:, k.P_CALM] = g[:, s.CALM_BELOW]
    fp[:, k.P_STORM] = g[:, s.STORM_ABOVE]
    ip = np.zeros((n, k.N_IPARAMS), np.int64)
    ip[:, k.I_MODE0:k.I_MODE0 + 3] = g[:, s.REGIME0:s.REGIME0 + 3].astype(np.int64)
    ip[:, k.I_SES_START] = g[:, s.SESSION_START].astype(np.int64)
    ip[:, k.I_SES_END] = g[:, s.SESSION_END].astype(np.int64)
    days = g[:, s.WEEKDAY0:s.WEEKDAY0 + 7].astype(np.int64)
    ip[:, k.I_WEEKMASK] = (days << np.arange(7)).sum(axis=1)
    ip[:, k.I_VARIANT] = g[:, s.VARIANT].astype(np.int64)
    ip[:, k.I_RVWIN] = g[:, s.RV_WIN].astype(np.int64)
    ip[:, k.I_USE_TP] = g[:, s.USE_TP].astype(np.int64)
    ip[:, k.I_TRAIL] = g[:, s.TRAIL].astype(np.int64)
    ip[:, k.I_MAX_BARS] = np.where(g[:, s.USE_MAX_BARS] == 1, g[:, s.MAX_BARS], 0).astype(np.int64)
    return Compiled(slots, thr, n_active, logic, fp, ip)
