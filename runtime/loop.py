"""K training steps in one onnxruntime call: the lowered train step wrapped in an ONNX Loop.

The whole training set stays bound to the session (shared with numpy, not copied);
each iteration slices its batch indices out of the epoch's permutation, gathers the
batch in-graph, runs the step body and carries weights and slots to the next
iteration. Per call the host passes the permutation, the first step, the trip count
and the K learning rates; it gets back the K losses and metric partials. Same numbers
as K single steps: the body is the very same step graph.
"""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from kgraph.runtime.session import create_session

OUTER = "outer/"


def _vi(name, elem_type, shape):
    return helper.make_tensor_value_info(name, elem_type, shape)


def wrap_in_loop(step: onnx.ModelProto, sig, batch_size: int) -> onnx.ModelProto:
    """An ONNX model running `step` for `trip` iterations over resident data."""
    g = step.graph
    types = {vi.name: vi.type.tensor_type for vi in list(g.input) + list(g.output)}
    carried = [inp for _, inp in sig.feedback]
    carried_out = {inp: out for out, inp in sig.feedback}
    host_outs = [o.name for o in g.output if not o.name.startswith("new/")]
    static_inputs = [i.name for i in g.input if i.name not in carried and i.name not in sig.data_inputs
                     and i.name not in ("lr", "t")]

    body_nodes = []
    mk = body_nodes.append
    consts = []

    def const(name, arr):
        consts.append(helper.make_tensor(name, helper.np_dtype_to_tensor_dtype(arr.dtype), arr.shape,
                                         arr.ravel().tolist()))
        return name

    b = const("loop/batch", np.array([batch_size], np.int64))
    mk(helper.make_node("Add", [OUTER + "step0", "loop/i"], ["loop/s"]))
    mk(helper.make_node("Unsqueeze", ["loop/s", const("loop/axis0", np.array([0], np.int64))], ["loop/s1"]))
    mk(helper.make_node("Mul", ["loop/s1", b], ["loop/start"]))
    mk(helper.make_node("Add", ["loop/start", b], ["loop/end"]))
    mk(helper.make_node("Slice", [OUTER + "perm", "loop/start", "loop/end"], ["loop/idx"]))
    for name in sig.data_inputs:
        mk(helper.make_node("Gather", [OUTER + "all/" + name, "loop/idx"], [name], axis=0))
    mk(helper.make_node("Gather", [OUTER + "lrs", "loop/i"], ["lr"], axis=0))
    mk(helper.make_node("Cast", ["loop/i"], ["loop/if"], to=TensorProto.FLOAT))
    mk(helper.make_node("Add", [OUTER + "t0", "loop/if"], ["t"]))
    rename = {name: OUTER + name for name in static_inputs}
    for node in g.node:
        n = onnx.NodeProto()
        n.CopyFrom(node)
        n.input[:] = [rename.get(x, x) for x in n.input]
        body_nodes.append(n)
    mk(helper.make_node("Identity", ["loop/cond_in"], ["loop/cond_out"]))
    # scan outputs must be distinct from the step's own output names
    for name in host_outs:
        mk(helper.make_node("Identity", [name], ["scan/" + name]))

    body_inputs = [_vi("loop/i", TensorProto.INT64, []), _vi("loop/cond_in", TensorProto.BOOL, [])]
    body_inputs += [helper.make_tensor_value_info(n, types[n].elem_type, None) for n in carried]
    body_outputs = [_vi("loop/cond_out", TensorProto.BOOL, [])]
    body_outputs += [helper.make_tensor_value_info(carried_out[n], types[n].elem_type, None) for n in carried]
    body_outputs += [helper.make_tensor_value_info("scan/" + n, types[n].elem_type, None) for n in host_outs]
    body = helper.make_graph(body_nodes, "train_step_body", body_inputs, body_outputs, initializer=consts)

    outer_inputs = [_vi(OUTER + "perm", TensorProto.INT64, ["M"]), _vi(OUTER + "step0", TensorProto.INT64, []),
                    _vi("trip", TensorProto.INT64, []), _vi(OUTER + "lrs", TensorProto.FLOAT, ["K"]),
                    _vi(OUTER + "t0", TensorProto.FLOAT, [])]
    for name in sig.data_inputs:
        dims = [d.dim_param or d.dim_value for d in types[name].shape.dim]
        outer_inputs.append(_vi(OUTER + "all/" + name, types[name].elem_type, ["N"] + dims[1:]))
    for name in static_inputs:
        outer_inputs.append(helper.make_tensor_value_info(OUTER + name, types[name].elem_type,
                                                          [d.dim_value for d in types[name].shape.dim]))
    for name in carried:
        outer_inputs.append(helper.make_tensor_value_info(
            "state_in/" + name, types[name].elem_type, [d.dim_value for d in types[name].shape.dim]))
    loop_outputs = ["state_out/" + n for n in carried] + ["steps/" + n for n in host_outs]
    loop = helper.make_node("Loop", ["trip", "", *["state_in/" + n for n in carried]], loop_outputs,
                            body=body)
    outer_outputs = [helper.make_tensor_value_info(n, types[c].elem_type, None)
                     for n, c in zip(loop_outputs, carried + host_outs)]
    inits = list(g.initializer)
    graph = helper.make_graph([loop], step.graph.name + "_loop", outer_inputs, outer_outputs,
                              initializer=inits)
    model = helper.make_model(graph, opset_imports=list(step.opset_import), producer_name="kgraph")
    model.ir_version = step.ir_version
    return model


class LoopRunner:
    """Runs up to K steps per call over data bound once per fit."""

    def __init__(self, step_model, sig, state, batch_size):
        self.sig, self.state, self.batch_size = sig, state, batch_size
        self.session = create_session(wrap_in_loop(step_model, sig, batch_size))
        self.carried = [inp for _, inp in sig.feedback]
        self.host_outs = [o.name for o in step_model.graph.output if not o.name.startswith("new/")]
        fed = set(self.carried)
        self.static = [n for n, _ in sig.weight_inputs + sig.slot_inputs if n not in fed]
        self.step0 = np.zeros((), np.int64)
        self.trip = np.zeros((), np.int64)
        self.t0 = np.zeros((), np.float32)
        self.bindings = []
        for parity in (0, 1):
            io = self.session.io_binding()
            for n in self.carried:
                io.bind_ortvalue_input("state_in/" + n, state.ortvalue(parity, n))
                io.bind_ortvalue_output("state_out/" + n, state.ortvalue(1 - parity, n))
            for n in self.static:
                io.bind_ortvalue_input(OUTER + n, state.ortvalue(parity, n))
            for name, arr in ((OUTER + "step0", self.step0), ("trip", self.trip), (OUTER + "t0", self.t0)):
                io.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(arr))
            for n in self.host_outs:
                io.bind_output("steps/" + n, "cpu")
            self.bindings.append(io)
        self._data_key = None
        self.seconds_per_step = None   # measured by the caller that sizes K by time

    def bind_data(self, sources, order):
        """Binds the full arrays (once per fit) and the epoch's permutation."""
        key = tuple(id(a) for a in sources)
        self._order = np.ascontiguousarray(order, np.int64)
        for io in self.bindings:
            if key != self._data_key:
                for name, value in zip(self.sig.data_inputs, self._resident(sources, key)):
                    io.bind_ortvalue_input(OUTER + "all/" + name, value)
            io.bind_ortvalue_input(OUTER + "perm", ort.OrtValue.ortvalue_from_numpy(self._order))
        self._sources = sources   # keep the bound arrays alive
        self._data_key = key

    def _resident(self, sources, key):
        """The training data as runtime values: shared with numpy on the CPU, copied to
        the device once per fit on CUDA."""
        if key != getattr(self, "_resident_key", None):
            device = self.state.device
            self._resident_values = [ort.OrtValue.ortvalue_from_numpy(a, "cuda", 0) if device == "cuda"
                                     else ort.OrtValue.ortvalue_from_numpy(a) for a in sources]
            self._resident_key = key
        return self._resident_values

    def run_steps(self, first_step: int, lrs, t0: float):
        """Runs len(lrs) steps starting at `first_step` of the bound permutation; returns
        {output name: array with one row per step}."""
        self.state.reload()
        io = self.bindings[self.state.parity]
        self._lrs = np.ascontiguousarray(lrs, np.float32)
        io.bind_ortvalue_input(OUTER + "lrs", ort.OrtValue.ortvalue_from_numpy(self._lrs))
        self.step0[...] = first_step
        self.trip[...] = len(lrs)
        self.t0[...] = t0
        for n in self.host_outs:  # per-step outputs change length with K: let onnxruntime allocate
            io.bind_output("steps/" + n, "cpu")
        self.session.run_with_iobinding(io)
        self.state.stepped()
        outs = io.get_outputs()
        return {n: outs[len(self.carried) + i].numpy() for i, n in enumerate(self.host_outs)}
