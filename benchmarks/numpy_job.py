"""A NumPy-heavy job step: array creation, arithmetic temporaries, reductions.

NumPy's data buffers come from its own allocator (``malloc`` through its data
memory handler), not from CPython's allocator domains; only the array objects
go through ``PyObject_Malloc``. This is the workload native mode is for.
"""

from __future__ import annotations

from typing import Any


def step(seed: int) -> float:
    """One step of the job: a few MiB of temporaries, a float result."""
    import numpy as np

    rng = np.random.default_rng(seed)
    a = rng.standard_normal((256, 256))
    b = rng.random((256, 256))
    c = (a * 2.0 + b) ** 2 - a / 3.0          # four temporaries of 512 KiB
    col_mean = c.mean(axis=0)
    row_std = c.std(axis=1)
    order = np.argsort(col_mean)
    picked = c[:, order[:64]]                  # fancy indexing copies
    positive = c[c > 0.5]                      # boolean mask copies
    stacked = np.concatenate([a, b, c])
    normed = (stacked - stacked.mean()) / (stacked.std() + 1e-9)
    windows: list[Any] = [normed[i:i + 32].sum(axis=0) for i in range(0, 768, 32)]
    small = [np.arange(64, dtype=np.float64) * k + row_std[k] for k in range(64)]
    return float(picked.sum() + positive.sum() + sum(w.sum() for w in windows)
                 + sum(s.sum() for s in small))
