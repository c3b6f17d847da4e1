"""The profile's operating points as arrays, so the vectorised core indexes them by action."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from grl_aecnn.profile import CodecProfile, OperatingPoint, ProfileError


@dataclass(frozen=True)
class PointTable:
    """Offloading points (index v = 0..V-1, smallest payload first) plus the local point.

    Analog points carry an accuracy-vs-SNR table resampled on one shared SNR grid, so the
    accuracy of any (point, SNR) pair is one gather and a linear interpolation.
    """

    ids: tuple[str, ...]
    codecs: tuple[str, ...]
    accuracy: np.ndarray  # (V,) nominal accuracy (digital: exact; analog: at training SNR)
    bits: np.ndarray  # (V,) bits sent (digital), 0 for analog
    channel_uses: np.ndarray  # (V,) complex symbols (analog), 0 for digital
    is_analog: np.ndarray  # (V,) bool
    device_flops: np.ndarray  # (V,) head + codec encoder
    encode_s: np.ndarray  # (V,) measured encode time on the profiling host (encoder, quantiser, coder)
    server_flops: np.ndarray  # (V,)
    snr_grid_db: np.ndarray  # (G,) union of the analog tables' SNRs (empty without analog points)
    acc_vs_snr: np.ndarray  # (V, G) accuracy on the grid (digital rows: constant)
    local_flops: float
    local_accuracy: float

    @property
    def num(self) -> int:
        return len(self.ids)

    def accuracy_at(self, v: np.ndarray, snr_db: np.ndarray) -> np.ndarray:
        """Accuracy of points v at realised SNRs (clamped at the table's ends)."""
        if self.snr_grid_db.size == 0:
            return self.accuracy[v]
        grid = self.snr_grid_db
        x = np.clip(snr_db, grid[0], grid[-1])
        hi = np.clip(np.searchsorted(grid, x, side="right"), 1, grid.size - 1)
        lo = hi - 1
        w = (x - grid[lo]) / (grid[hi] - grid[lo])
        return self.acc_vs_snr[v, lo] * (1.0 - w) + self.acc_vs_snr[v, hi] * w


def point_table(profile: CodecProfile, codecs: list[str]) -> PointTable:
    """Arrays for the offloading points of `codecs`; an unknown codec raises ProfileError naming it."""
    points: list[OperatingPoint] = profile.select(list(codecs))
    if not points:
        raise ProfileError(f"codecs {list(codecs)}: no offloading points in the profile")
    analog = [p for p in points if p.is_analog]
    grid = np.unique(np.array([s.snr_db for p in analog for s in p.accuracy_vs_snr or []], dtype=float))
    if grid.size == 1:
        grid = np.array([grid[0], grid[0] + 1.0])
    rows = []
    for p in points:
        if p.is_analog and p.accuracy_vs_snr:
            table = p.accuracy_vs_snr
            rows.append(np.interp(grid, [s.snr_db for s in table], [s.accuracy for s in table]))
        else:
            rows.append(np.full(grid.size, p.accuracy))
    local = profile.local_point()
    return PointTable(
        ids=tuple(p.id for p in points),
        codecs=tuple(p.codec for p in points),
        accuracy=np.array([p.accuracy for p in points]),
        bits=np.array([0.0 if p.is_analog else 8.0 * float(p.payload_bytes or 0.0) for p in points]),
        channel_uses=np.array([float(p.channel_uses or 0.0) if p.is_analog else 0.0 for p in points]),
        is_analog=np.array([p.is_analog for p in points]),
        device_flops=np.array([p.device_flops for p in points]),
        encode_s=np.array([p.encode_ms / 1e3 for p in points]),
        server_flops=np.array([p.server_flops for p in points]),
        snr_grid_db=grid,
        acc_vs_snr=np.array(rows).reshape(len(points), grid.size),
        local_flops=float(local.device_flops),
        local_accuracy=float(local.accuracy),
    )
