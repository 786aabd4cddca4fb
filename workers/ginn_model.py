"""GINN training in torch (farm side): a one-layer LSTM, a linear head and softplus, trained on
lam * MSE(yhat, y) + (1 - lam) * MSE(yhat, garch) (Xu et al. 2024; lam = 0 is GINN-0, lam = 1 a
plain LSTM), exported as ``market.ginn.GinnWeights`` for the numpy forward pass.

Samples: the window of ``seq_len`` input rows ending at bar t, the target y[t] = r_{t+1}² and
the GARCH(1,1) forecast made at t. A bar t belongs to a slice when t and t + 1 (where its target
comes from) both lie in it, so nothing a slice trains or validates on reads a close after it;
windows may reach back before the slice (inputs are causal). Rows with any NaN in the window,
the target or the GARCH forecast are skipped. Inputs are standardised with the training slice's
finite rows only; targets are divided by y_scale = mean of the training y, so the loss is O(1).

Determinism: float64 by default; torch.manual_seed(seed) inside ``torch.random.fork_rng`` (the
caller's RNG state is left as it was), batches drawn by a seeded generator, deterministic
algorithms on and a fixed thread count (``threads``) while training, all restored afterwards.
CPU runs are bit for bit reproducible: the same data, spec, lam and settings give identical
weights bytes. GPU (device="cuda"): cuDNN's LSTM sums in another order than the CPU kernels,
and the difference grows through training (and can move the early-stopping epoch), so a GPU
run is not bit-equal to a CPU run. Stated tolerance, not measured in this repository's CI (no
GPU): forecasts of GPU- and CPU-trained models at the same seed agree within GPU_RTOL
relative; repeated GPU runs on one machine are meant to be identical (CUBLAS_WORKSPACE_CONFIG
and cudnn.deterministic are set).
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from market.ginn import GinnError, GinnSpec, GinnWeights, forecast

__all__ = [
    "GPU_RTOL",
    "GinnNet",
    "TrainResult",
    "TrainSettings",
    "net_from_weights",
    "sample_rows",
    "select_lambda",
    "torch_forecast",
    "train_ginn",
]

GPU_RTOL = 1e-4  # stated GPU-vs-CPU forecast tolerance (float64, same seed); see the docstring
STD_FLOOR = 1e-12  # a constant training column (a regime never seen) is scaled by 1, not 1/0


@dataclass(frozen=True)
class TrainSettings:
    epochs: int = 30
    lr: float = 1e-3
    batch: int = 64
    seed: int = 0
    patience: int = 5          # epochs without a better validation loss before stopping
    device: str = "cpu"        # "cuda" (or "cuda:N") to train on a GPU
    threads: int = 1           # torch threads while training: fixed, so results do not depend
    #                            on the machine's core count
    dtype: str = "float64"     # "float32" trains faster on GPU; numpy parity then ~1e-6
    es_fraction: float = 0.2   # select_lambda: tail of each fold's training span used for
    #                            early stopping

    def check(self) -> None:
        """GinnError naming the bad setting."""
        problems = []
        for name in ("epochs", "batch", "patience", "threads"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1")
        if not (self.lr > 0.0 and math.isfinite(self.lr)):
            problems.append("lr must be > 0")
        if self.dtype not in ("float64", "float32"):
            problems.append(f"dtype must be float64 or float32, got {self.dtype!r}")
        if not 0.0 < self.es_fraction < 1.0:
            problems.append("es_fraction must be in (0, 1)")
        if not (self.device == "cpu" or self.device.startswith("cuda")):
            problems.append(f"device must be cpu or cuda[:N], got {self.device!r}")
        if problems:
            raise GinnError("GINN train settings: " + "; ".join(problems))


@dataclass(frozen=True)
class TrainResult:
    weights: GinnWeights
    curve: list[dict] = field(default_factory=list)  # [{epoch, train_loss, val_loss}]
    seconds_per_epoch: float = math.nan


class GinnNet(nn.Module):
    """LSTM (one layer, batch first) -> last hidden state -> linear -> softplus (scaled units)."""

    def __init__(self, n_features: int, hidden: int) -> None:
        super().__init__()
        self.lstm = nn.LSTM(n_features, hidden, num_layers=1, batch_first=True)
        self.head = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [batch, seq_len, n_features]
        out, _ = self.lstm(x)
        return F.softplus(self.head(out[:, -1, :]))[:, 0]


def _dtype(name: str) -> torch.dtype:
    return torch.float64 if name == "float64" else torch.float32


def net_from_weights(w: GinnWeights, dtype: str = "float64") -> GinnNet:
    """A torch module holding ``w``'s parameters (CPU): the reference the numpy pass matches."""
    net = GinnNet(w.spec.n_features, w.spec.hidden).to(_dtype(dtype))
    with torch.no_grad():
        for p, a in ((net.lstm.weight_ih_l0, w.w_ih), (net.lstm.weight_hh_l0, w.w_hh),
                     (net.lstm.bias_ih_l0, w.b_ih), (net.lstm.bias_hh_l0, w.b_hh),
                     (net.head.weight, w.w_out), (net.head.bias, w.b_out)):
            p.copy_(torch.from_numpy(np.asarray(a)))
    return net.eval()


def torch_forecast(w: GinnWeights, x: np.ndarray, dtype: str = "float64") -> np.ndarray:
    """``market.ginn.forecast`` computed by torch.nn.LSTM (CPU): NaN where the window is
    incomplete or has a NaN."""
    x = np.asarray(x, dtype=np.float64)
    n, seq = x.shape[0], w.spec.seq_len
    out = np.full(n, np.nan)
    good = np.all(np.isfinite(x), axis=1)
    ends = np.array([t for t in range(seq - 1, n) if good[t - seq + 1 : t + 1].all()],
                    dtype=np.int64)
    if ends.size == 0:
        return out
    xs = np.where(good[:, None], (x - w.x_mean) / w.x_std, 0.0)
    idx = ends[:, None] + np.arange(-seq + 1, 1)
    with torch.no_grad():
        z = net_from_weights(w, dtype)(torch.from_numpy(xs[idx]).to(_dtype(dtype)))
    out[ends] = z.double().numpy() * w.y_scale
    return out


def _bounds(s: slice, n: int, what: str) -> tuple[int, int]:
    start, stop, step = s.indices(n)
    if step != 1:
        raise GinnError(f"GINN {what} slice must have step 1, got {s}")
    return start, max(start, stop)


def sample_rows(x: np.ndarray, y: np.ndarray, garch: np.ndarray, s: slice, seq_len: int,
                what: str = "sample") -> np.ndarray:
    """Bars t usable as samples of slice ``s``: t and t + 1 in the slice, t >= seq_len - 1, the
    window x[t-seq_len+1..t], y[t] and garch[t] all finite (int64, ascending)."""
    a, b = _bounds(s, x.shape[0], what)
    good = np.all(np.isfinite(x), axis=1)
    bad = np.concatenate([[0], np.cumsum(~good)])
    t = np.arange(max(a, seq_len - 1), b - 1, dtype=np.int64)
    ok = (bad[t + 1] - bad[t + 1 - seq_len] == 0) & np.isfinite(y[t]) & np.isfinite(garch[t])
    return t[ok]


def _check_data(x: np.ndarray, y: np.ndarray, garch: np.ndarray, spec: GinnSpec
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    garch = np.asarray(garch, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != spec.n_features:
        raise GinnError(f"GINN training: inputs must be [rows, {spec.n_features}], got "
                        f"{x.shape}")
    if y.shape != (x.shape[0],) or garch.shape != (x.shape[0],):
        raise GinnError(f"GINN training: y {y.shape} and garch {garch.shape} must both be "
                        f"({x.shape[0]},)")
    return x, y, garch


@contextlib.contextmanager
def _deterministic(settings: TrainSettings) -> Iterator[torch.device]:
    """Seeded, deterministic, fixed-thread torch for the block; everything restored after."""
    dev = torch.device(settings.device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise GinnError(f"GINN training: device {settings.device!r} asked, but torch sees "
                            "no CUDA device")
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    threads = torch.get_num_threads()
    det = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    cudnn = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    devices = [dev.index or 0] if dev.type == "cuda" else []
    try:
        torch.set_num_threads(settings.threads)
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(settings.seed)
            yield dev
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(det, warn_only=warn_only)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn


def _export(net: GinnNet, spec: GinnSpec, mean: np.ndarray, std: np.ndarray, y_scale: float,
            meta: dict) -> GinnWeights:
    def arr(p: torch.Tensor) -> np.ndarray:
        return p.detach().to("cpu", torch.float64).numpy().copy()

    return GinnWeights(spec=spec, w_ih=arr(net.lstm.weight_ih_l0),
                       w_hh=arr(net.lstm.weight_hh_l0), b_ih=arr(net.lstm.bias_ih_l0),
                       b_hh=arr(net.lstm.bias_hh_l0), w_out=arr(net.head.weight),
                       b_out=arr(net.head.bias), x_mean=mean, x_std=std, y_scale=y_scale,
                       meta=meta)


def train_ginn(x: np.ndarray, y: np.ndarray, garch: np.ndarray, train: slice, val: slice,
               spec: GinnSpec, lam: float, settings: TrainSettings, meta: dict) -> TrainResult:
    """Train on the samples of ``train``, early-stop on the loss over ``val``'s samples, and
    return the best epoch's weights (meta: the caller's, plus lam, seed, epochs, best_epoch,
    torch, device, dtype, threads, rows and val_loss; trained_at defaults to now, UTC)."""
    settings.check()
    if not 0.0 <= lam <= 1.0:
        raise GinnError(f"GINN training: lam must be in [0, 1], got {lam!r}")
    x, y, garch = _check_data(x, y, garch, spec)
    tr = sample_rows(x, y, garch, train, spec.seq_len, "train")
    va = sample_rows(x, y, garch, val, spec.seq_len, "val")
    if tr.size == 0 or va.size == 0:
        raise GinnError(f"GINN training: no complete samples (train {tr.size}, val {va.size}); "
                        f"need windows of {spec.seq_len} finite rows inside train {train} and "
                        f"val {val}")
    a, b = _bounds(train, x.shape[0], "train")
    rows = x[a:b][np.all(np.isfinite(x[a:b]), axis=1)]
    mean = rows.mean(axis=0)
    std = rows.std(axis=0)
    std = np.where(std > STD_FLOOR, std, 1.0)
    y_scale = float(np.mean(y[tr]))
    if not (y_scale > 0.0 and math.isfinite(y_scale)):
        raise GinnError(f"GINN training: mean training target is {y_scale!r}, need > 0 "
                        "(all-flat prices?)")
    good = np.all(np.isfinite(x), axis=1)
    xs = np.where(good[:, None], (x - mean) / std, 0.0)
    offs = np.arange(-spec.seq_len + 1, 1)
    curve: list[dict] = []
    with _deterministic(settings) as dev:
        dt = _dtype(settings.dtype)
        net = GinnNet(spec.n_features, spec.hidden).to(dev, dt)
        xt = torch.from_numpy(xs).to(dev, dt)

        def tensors(t: np.ndarray) -> tuple[torch.Tensor, ...]:
            return (torch.from_numpy(t[:, None] + offs).to(dev),
                    torch.from_numpy(y[t] / y_scale).to(dev, dt),
                    torch.from_numpy(garch[t] / y_scale).to(dev, dt))

        idx_tr, y_tr, g_tr = tensors(tr)
        idx_va, y_va, g_va = tensors(va)

        def loss_of(pred: torch.Tensor, yy: torch.Tensor, gg: torch.Tensor) -> torch.Tensor:
            return lam * F.mse_loss(pred, yy) + (1.0 - lam) * F.mse_loss(pred, gg)

        opt = torch.optim.Adam(net.parameters(), lr=settings.lr)
        gen = torch.Generator().manual_seed(settings.seed)
        best, best_epoch, best_state, since = math.inf, 0, None, 0
        t0 = time.perf_counter()
        for epoch in range(1, settings.epochs + 1):
            net.train()
            perm = torch.randperm(tr.size, generator=gen).to(dev)
            total = 0.0
            for k in range(0, tr.size, settings.batch):
                ids = perm[k : k + settings.batch]
                loss = loss_of(net(xt[idx_tr[ids]]), y_tr[ids], g_tr[ids])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += float(loss.detach()) * ids.numel()
            net.eval()
            with torch.no_grad():
                val_loss = float(loss_of(net(xt[idx_va]), y_va, g_va))
            curve.append({"epoch": epoch, "train_loss": total / tr.size, "val_loss": val_loss})
            if not math.isfinite(val_loss):
                raise GinnError(f"GINN training diverged at epoch {epoch} (val loss "
                                f"{val_loss!r}); lower lr")
            if val_loss < best:
                best, best_epoch, since = val_loss, epoch, 0
                best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
            else:
                since += 1
                if since >= settings.patience:
                    break
        seconds = (time.perf_counter() - t0) / len(curve)
        assert best_state is not None  # the first epoch always sets it (finite loss checked)
        net.load_state_dict(best_state)
    info = {"lam": float(lam), "seed": settings.seed, "epochs": len(curve),
            "best_epoch": best_epoch, "torch": torch.__version__, "device": settings.device,
            "dtype": settings.dtype, "threads": settings.threads, "lr": settings.lr,
            "batch": settings.batch, "train_rows": int(tr.size), "val_rows": int(va.size),
            "val_loss": best}
    full = {"trained_at": datetime.now(UTC).isoformat(timespec="seconds"), **meta, **info}
    return TrainResult(_export(net, spec, mean, std, y_scale, full), curve, seconds)


def select_lambda(x: np.ndarray, y: np.ndarray, garch: np.ndarray, research: slice,
                  spec: GinnSpec, settings: TrainSettings,
                  lams: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0), folds: int = 3
                  ) -> tuple[float, dict[float, float]]:
    """Expanding walk-forward inside ``research`` only: it is cut into folds + 1 equal blocks;
    fold k trains on blocks 0..k-1 (their last ``settings.es_fraction`` held out for early
    stopping) and is scored on block k by the MSE of the numpy forecast against y. Returns the
    lam with the lowest mean score (ties: the first in ``lams``) and the mean score per lam."""
    if folds < 1 or not lams:
        raise GinnError("select_lambda: need folds >= 1 and at least one lam")
    settings.check()
    x, y, garch = _check_data(x, y, garch, spec)
    a, b = _bounds(research, x.shape[0], "research")
    block = (b - a) // (folds + 1)
    splits = []
    for k in range(1, folds + 1):
        end = a + k * block
        es = max(1, round(k * block * settings.es_fraction))
        val_end = b if k == folds else end + block
        splits.append((slice(a, end - es), slice(end - es, end), slice(end, val_end)))
    table: dict[float, float] = {}
    for lam in lams:
        scores = []
        for fit, stop, test in splits:
            w = train_ginn(x, y, garch, fit, stop, spec, float(lam), settings, {}).weights
            rows = sample_rows(x, y, garch, test, spec.seq_len, "fold")
            if rows.size == 0:
                raise GinnError(f"select_lambda: fold {test} has no complete samples")
            f = forecast(w, x)[rows]
            scores.append(float(np.mean((f - y[rows]) ** 2)))
        table[float(lam)] = float(np.mean(scores))
    best = min(table, key=lambda k: (table[k], list(table).index(k)))
    return best, table
