"""Every RNG a training step draws from (torch, CUDA, numpy, Python), as plain values.

`capture_rng_state()` returns tensors, ints and floats only, so a checkpoint that holds it loads
with ``torch.load(weights_only=True)``; `restore_rng_state(state)` puts them back. A resumed run
then draws exactly what an uninterrupted one would have.
"""

from __future__ import annotations

import logging
import random
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)


def capture_rng_state() -> dict[str, Any]:
    """torch / cuda / numpy / python RNG states as plain values (tensors, ints, floats)."""
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    py_version, py_internal, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "name": str(np_name),
            "keys": torch.from_numpy(np_keys.astype(np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "cached_gaussian": float(np_gauss),
        },
        "python": {
            "version": int(py_version),
            "internal": torch.tensor(py_internal, dtype=torch.int64),
            "gauss_next": py_gauss,
        },
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = [s.cpu() for s in torch.cuda.get_rng_state_all()]
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of capture_rng_state (missing parts are left alone)."""
    if "torch" in state:
        torch.set_rng_state(state["torch"].cpu().to(torch.uint8))
    if "numpy" in state:
        np_state = state["numpy"]
        np.random.set_state(
            (
                np_state["name"],
                np_state["keys"].cpu().numpy().astype(np.uint32),
                int(np_state["pos"]),
                int(np_state["has_gauss"]),
                float(np_state["cached_gaussian"]),
            )
        )
    if "python" in state:
        py_state = state["python"]
        internal = tuple(int(v) for v in py_state["internal"].tolist())
        random.setstate((int(py_state["version"]), internal, py_state["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([s.cpu().to(torch.uint8) for s in cuda_states])
        else:
            log.warning(
                "checkpoint has CUDA RNG states for %d devices, this machine has %d: "
                "CUDA RNG not restored",
                len(cuda_states),
                torch.cuda.device_count(),
            )
