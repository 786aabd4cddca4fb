"""The ``ginn`` volatility variant: a GINN model as the volatility tables use it.

The fifth variance row (``market.volatility.GARCH_VARIANTS[-1]``) is the GINN forecast of the
next bar's variance made at the close of t from the GARCH-family rows, RV and returns <= t
(``market.ginn``'s inputs and LSTM), where

- a model is configured and given (``GinnModel``), and
- bar t opens strictly after the model's training data end (``meta["data_end"]``, an ISO time
  with a zone: the weights then depend only on data before bar t), and
- the forecast is defined (a full window of ``seq_len`` finite input rows);

everywhere else the row is the garch11 row ("GINN falls back to GARCH"). So it is causal by
construction, like the others. The row is computed by ``volatility_nb.ginn_advance`` (fixed
summation order), which the batch build, the continuation and the live step all call: they
agree bit for bit, and with ``market.ginn.forecast`` to rounding (~1e-15 relative).

numpy and numba only: the live executor imports this.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path

import numpy as np

from market.ginn import (
    SOFTPLUS_THRESHOLD,
    VAR_FLOOR,
    GinnError,
    GinnWeights,
    _header,
    _npz_bytes,
    load_weights,
    meta_time,
)
from market.volatility import GARCH_FAMILY, RV_WINDOWS
from market.volatility_nb import ginn_advance

__all__ = ["GinnModel", "model_sha256"]

GARCH_ROW = GARCH_FAMILY.index("garch11")  # the fallback row and the regime source


def model_sha256(w: GinnWeights) -> str:
    """The sha256 ``save_weights`` gives these weights (the .npz's bytes are a pure function of
    them: fixed zip timestamps), so a model known only in memory has its file's digest."""
    text = json.dumps(_header(w), sort_keys=True, allow_nan=False)
    return hashlib.sha256(_npz_bytes(w, text)).hexdigest()


def _data_end_ns(meta: dict, where: str) -> int:
    raw = meta.get("data_end")
    if raw is None:
        raise GinnError(f"{where}: model meta has no data_end: cannot tell which bars it was "
                        "trained on, so it cannot be used as a volatility variant")
    t = meta_time(meta, "data_end", where)
    d = t - datetime(1970, 1, 1, tzinfo=UTC)
    return (d.days * 86_400 + d.seconds) * 1_000_000_000 + d.microseconds * 1000


@dataclass(frozen=True, eq=False)
class GinnModel:
    """Verified weights, their sha256 (recorded by the tables built with them) and the open
    time (UTC ns) of the last bar they were trained on: the row uses them only after it."""

    weights: GinnWeights
    sha256: str
    data_end_ns: int

    @classmethod
    def of(cls, weights: GinnWeights, where: str = "GINN model") -> GinnModel:
        """The model of in-memory weights (meta must carry data_end)."""
        problems = weights.problems()
        if problems:
            raise GinnError(f"{where}: " + "; ".join(problems))
        return cls(weights, model_sha256(weights), _data_end_ns(weights.meta, where))

    @classmethod
    def load(cls, path: Path, **kwargs: object) -> GinnModel:
        """``market.ginn.load_weights(path, **kwargs)`` (sha256, header, shapes, age) as a model."""
        return cls.of(load_weights(Path(path), **kwargs), where=str(path))  # type: ignore[arg-type]

    @property
    def trained_at(self) -> datetime:
        """When the model was trained (its meta's ``trained_at``): what freshness is checked on."""
        return meta_time(self.weights.meta, "trained_at", f"GINN model {self.sha256[:12]}")

    @property
    def seq_len(self) -> int:
        return self.weights.spec.seq_len

    @property
    def n_features(self) -> int:
        return self.weights.spec.n_features

    def check_keep(self, keep: int) -> None:
        """GinnError unless the ``lags`` returns an input row reads fit in the ``keep`` returns a
        volatility state holds (the continuation must see what the batch sees)."""
        if self.weights.spec.lags > keep:
            raise GinnError(f"GINN model {self.sha256[:12]}: {self.weights.spec.lags} lagged "
                            f"returns exceed the {keep} a volatility state keeps (window)")

    def empty_rows(self) -> np.ndarray:
        """An input-row buffer for ``advance``: [seq_len, n_features]."""
        return np.full((self.seq_len, self.n_features), np.nan)

    def advance(self, r: np.ndarray, t0: int, var: np.ndarray, rv: np.ndarray, ts: np.ndarray,
                bars_per_year: float, xbuf: np.ndarray, k: int, out: np.ndarray) -> int:
        """``volatility_nb.ginn_advance`` with this model: the ginn row of the columns of
        ``var`` (rows GARCH_VARIANTS, family rows final) into ``out``; ``xbuf`` (first ``k``
        rows filled) is advanced in place; returns its new fill count."""
        a = self._args
        return ginn_advance(r, t0, var, rv, np.ascontiguousarray(ts, dtype=np.int64),
                            self.data_end_ns, GARCH_ROW, a[0], a[1], a[2], float(bars_per_year),
                            *a[3:], xbuf, k, out)

    @cached_property
    def _args(self) -> tuple:
        w, s = self.weights, self.weights.spec
        return (s.lags, np.array([RV_WINDOWS.index(x) for x in s.rv_windows], dtype=np.int64),
                np.array([GARCH_FAMILY.index(v) for v in s.variants], dtype=np.int64),
                s.calm_below, s.storm_above, VAR_FLOOR, w.x_mean, w.x_std, w.w_ih,
                w.b_ih + w.b_hh, w.w_hh, np.ascontiguousarray(w.w_out[0]), float(w.b_out[0]),
                w.y_scale, SOFTPLUS_THRESHOLD)
