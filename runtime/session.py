"""onnxruntime sessions as kgraph creates them: execution provider, threads, flags.

Every session flushes denormals to zero: onnxruntime applies the flag process-wide
only from the first session created, and without it Adam's decaying moments make
steps 3-4x slower (FACTS.md), so the flag is set on every session we create.
"""
from __future__ import annotations

import os
import sys

import onnxruntime as ort

DEVICES = ("cpu", "cuda", "auto")
_STATE = {"intra_op": int(os.environ.get("KGRAPH_NUM_THREADS", "0")),
          "device": None, "requested": os.environ.get("KGRAPH_DEVICE", "cpu"),
          "ort_level": os.environ.get("KGRAPH_ORT_OPT_LEVEL", "all")}
ORT_LEVELS = {"disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
              "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
              "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
              "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}


class DeviceError(RuntimeError):
    """The requested execution device cannot be used here; says what is missing."""


def set_num_threads(n: int):
    """Intra-op threads for sessions created from now on (0: onnxruntime's default)."""
    if not isinstance(n, int) or n < 0:
        raise ValueError(f"set_num_threads expects a non-negative integer. Received: n={n!r}")
    _STATE["intra_op"] = n


def set_ort_optimization_level(level: str):
    """onnxruntime's own graph optimizations for sessions created from now on:
    'disable', 'basic', 'extended' or 'all' (the default)."""
    if level not in ORT_LEVELS:
        raise ValueError(f"optimization level must be one of {sorted(ORT_LEVELS)}. Received: level={level!r}")
    _STATE["ort_level"] = level


def cuda_problem() -> str | None:
    """Why CUDA cannot be used, or None when it can."""
    available = ort.get_available_providers()
    if "CUDAExecutionProvider" not in available:
        return ("this onnxruntime build has no CUDA execution provider (available: "
                f"{', '.join(available)}); install the CUDA build with `pip install \"kgraph[cuda]\"` "
                "(onnxruntime-gpu, which replaces onnxruntime)")
    try:
        from onnx import TensorProto, helper
        g = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "probe",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
        m.ir_version = 10
        s = ort.InferenceSession(m.SerializeToString(), providers=["CUDAExecutionProvider"])
        if "CUDAExecutionProvider" not in s.get_providers():
            return "onnxruntime could not start its CUDA provider (no usable NVIDIA GPU or CUDA/cuDNN libraries)"
    except Exception as e:  # the provider failed to start: report its reason
        return f"onnxruntime's CUDA provider failed to start: {str(e).splitlines()[0]}"
    return None


def set_device(device: str):
    """'cpu', 'cuda' (errors clearly when unusable) or 'auto' (CUDA when usable, else CPU,
    and says which). Applies to sessions created from now on."""
    if device not in DEVICES:
        raise ValueError(f"set_device expects one of {DEVICES}. Received: device={device!r}")
    if device == "cuda":
        problem = cuda_problem()
        if problem:
            raise DeviceError(f"device 'cuda' is not usable: {problem}")
        _STATE["device"] = "cuda"
    elif device == "auto":
        problem = cuda_problem()
        _STATE["device"] = "cpu" if problem else "cuda"
        print(f"kgraph: using device {_STATE['device']}" + (f" ({problem})" if problem else ""),
              file=sys.stderr)
    else:
        _STATE["device"] = "cpu"
    _STATE["requested"] = device
    return _STATE["device"]


def device() -> str:
    if _STATE["device"] is None:
        set_device(_STATE["requested"])
    return _STATE["device"]


def session_options() -> ort.SessionOptions:
    so = ort.SessionOptions()
    so.add_session_config_entry("session.set_denormal_as_zero", "1")
    so.intra_op_num_threads = _STATE["intra_op"]
    so.log_severity_level = 3
    so.graph_optimization_level = ORT_LEVELS[_STATE["ort_level"]]
    return so


def providers() -> list:
    # TF32 off: CUDA results then agree with the CPU's float32 numbers (Keras-exact tests).
    if device() == "cuda":
        return [("CUDAExecutionProvider", {"use_tf32": 0}), "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def create_session(model_proto) -> ort.InferenceSession:
    data = model_proto if isinstance(model_proto, bytes) else model_proto.SerializeToString()
    return ort.InferenceSession(data, sess_options=session_options(), providers=providers())
