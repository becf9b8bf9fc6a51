"""onnxruntime sessions as kgraph creates them.

Every session flushes denormals to zero: onnxruntime applies the flag process-wide
only from the first session created, and without it Adam's decaying moments make
steps 3-4x slower (FACTS.md), so the flag is set on every session we create.
"""
from __future__ import annotations

import os

import onnxruntime as ort

_THREADS = {"intra_op": int(os.environ.get("KGRAPH_NUM_THREADS", "0"))}


def set_num_threads(n: int):
    """Intra-op threads for sessions created from now on (0: onnxruntime's default)."""
    if not isinstance(n, int) or n < 0:
        raise ValueError(f"set_num_threads expects a non-negative integer. Received: n={n!r}")
    _THREADS["intra_op"] = n


def session_options() -> ort.SessionOptions:
    so = ort.SessionOptions()
    so.add_session_config_entry("session.set_denormal_as_zero", "1")
    so.intra_op_num_threads = _THREADS["intra_op"]
    so.log_severity_level = 3
    return so


def providers() -> list[str]:
    return ["CPUExecutionProvider"]


def create_session(model_proto) -> ort.InferenceSession:
    data = model_proto if isinstance(model_proto, bytes) else model_proto.SerializeToString()
    return ort.InferenceSession(data, sess_options=session_options(), providers=providers())
