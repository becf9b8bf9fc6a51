"""Process-wide settings: execution device, threads, steps per runtime call."""
from __future__ import annotations

import os

def _steps_from_env():
    value = os.environ.get("KGRAPH_STEPS_PER_CALL", "auto")
    return None if value == "auto" else int(value)


_SETTINGS = {"auto_steps_per_call": _steps_from_env(),
             "flat_update_max_size": int(os.environ.get("KGRAPH_FLAT_UPDATE_MAX_SIZE", "16384"))}

# what `fit` aims for per onnxruntime call when it picks the steps per call itself: long
# enough that the per-call cost (~0.2 ms) vanishes, short enough for prompt stop checks
AUTO_CALL_SECONDS = 0.1
AUTO_MAX_STEPS = 1024


def auto_steps_per_call():
    """The fixed steps per call set with set_auto_steps_per_call, or None: `fit` sizes the
    calls itself (about AUTO_CALL_SECONDS each)."""
    return _SETTINGS["auto_steps_per_call"]


def set_auto_steps_per_call(k):
    """How many training steps `fit` runs per onnxruntime call when no callback observes
    single batches and `steps_per_execution` was left at 1: a positive integer (1 turns
    the K-step calls off), or 'auto' (the default; also KGRAPH_STEPS_PER_CALL): as many
    steps as take about 0.1 s, measured as it goes. The numbers do not depend on it."""
    if k == "auto" or k is None:
        _SETTINGS["auto_steps_per_call"] = None
        return
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"set_auto_steps_per_call expects a positive integer or 'auto'. Received: k={k!r}")
    _SETTINGS["auto_steps_per_call"] = k


def flat_update_max_size() -> int:
    return _SETTINGS["flat_update_max_size"]


def set_flat_update_max_size(n: int):
    """Trainable float32 variables of at most `n` elements are updated by the optimizer as
    one flat tensor (one kernel per update op instead of one per variable); 0 turns this
    off. Applies to train graphs built from now on (after `compile`)."""
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise ValueError(f"set_flat_update_max_size expects a non-negative integer. Received: n={n!r}")
    _SETTINGS["flat_update_max_size"] = n


def set_device(device: str) -> str:
    """Execution device for sessions created from now on: 'cpu', 'cuda' or 'auto'
    (the KGRAPH_DEVICE environment variable sets the default). Returns the device used."""
    from kgraph.runtime.session import set_device as _set
    return _set(device)


def get_device() -> str:
    from kgraph.runtime.session import device
    return device()


def set_num_threads(n: int):
    """Intra-op threads of the onnxruntime sessions created from now on (0: its default)."""
    from kgraph.runtime.session import set_num_threads as _set
    _set(n)
