"""IR -> onnx.ModelProto, one lowering function per op (kept in the op registry).

The opset is pinned so that the same IR always lowers to the same file. Dimensions
unknown at compile time (the batch) become symbolic `dim_param`s, so one file serves
every batch size.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from kgraph.ir.registry import NodeView, get_op

OPSET = 18
PRODUCER = "kgraph"


class LowerContext:
    """What a lowering rule may do: add ONNX nodes, constants and fresh names."""

    def __init__(self, target="portable", device="cpu"):
        self.target = target
        self.device = device  # the execution provider the onnxruntime target is written for
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: dict[str, onnx.TensorProto] = {}
        self._const_names: dict = {}
        self._n = 0
        self._current = "node"

    def fresh(self, hint: str = "t") -> str:
        self._n += 1
        return f"{self._current}/{hint}_{self._n}"

    def node(self, op_type, inputs, outputs, domain="", **attrs):
        self._n += 1
        self.nodes.append(helper.make_node(op_type, list(inputs), list(outputs),
                                           name=f"{self._current}/{op_type}_{self._n}",
                                           domain=domain, **attrs))

    def const(self, arr: np.ndarray, name: str | None = None) -> str:
        arr = np.asarray(arr)
        key = (arr.dtype.str, arr.shape, arr.tobytes())
        if name is None and key in self._const_names:
            return self._const_names[key]
        name = name or f"const_{len(self.initializers)}"
        self.initializers[name] = numpy_helper.from_array(arr, name)
        self._const_names.setdefault(key, name)
        return name


def _value_info(name, ttype, sym_prefix):
    dims = [d if d is not None else (f"{sym_prefix}_d{i}" if i else "batch")
            for i, d in enumerate(ttype.shape)]
    return helper.make_tensor_value_info(
        name, helper.np_dtype_to_tensor_dtype(np.dtype(ttype.dtype)), dims)


TARGETS = ("portable", "onnxruntime")


def lower(graph, freeze: dict | None = None, opset: int = OPSET, metadata: dict | None = None,
          name: str | None = None, target: str = "portable", device: str = "cpu") -> onnx.ModelProto:
    """Lowers `graph`. Inputs named in `freeze` become initializers with the given values
    (weights baked in for serving); the others stay graph inputs, in `graph.inputs` order.
    `target`: 'portable' writes the standard ONNX domain only (files for serving);
    'onnxruntime' may use contrib ops that plain onnxruntime loads (e.g. FusedGemm), only
    those the `device`'s execution provider supports (on CUDA, FusedConv only with Relu)."""
    if target not in TARGETS:
        raise ValueError(f"unknown lowering target {target!r}; expected one of {TARGETS}")
    freeze = freeze or {}
    ctx = LowerContext(target, device)
    names: dict[tuple[int, int], str] = {}
    inputs = []
    for v in graph.inputs:
        iname = graph.g.nodes[v.node]["attrs"]["name"]
        names[(v.node, 0)] = iname
        if iname in freeze:
            ctx.initializers[iname] = numpy_helper.from_array(
                np.asarray(freeze[iname], dtype=v.dtype), iname)
        else:
            inputs.append(_value_info(iname, v.type, iname))

    # Graph outputs take the name of the value that produces them when that is unambiguous.
    out_alias: dict[tuple[int, int], str] = {}
    identities = []
    for oname, v in graph.outputs:
        key = (v.node, v.index)
        if key in out_alias or graph.g.nodes[v.node]["op"] in ("input", "const"):
            identities.append((key, oname))
        else:
            out_alias[key] = oname

    # names the user chose (inputs, outputs) are never reused for internal tensors
    reserved = {graph.g.nodes[v.node]["attrs"]["name"] for v in graph.inputs} | {n for n, _ in graph.outputs}
    for nid in graph.topological_order():
        data = graph.g.nodes[nid]
        op = data["op"]
        if op == "input":
            continue
        if op == "const":
            names[(nid, 0)] = out_alias.get((nid, 0)) or ctx.const(data["attrs"]["value"],
                                                                    name=data["attrs"].get("name"))
            continue
        view = NodeView(graph, nid)
        ins = [names[(v.node, v.index)] for v in graph.node_inputs(nid)]
        outs = []
        for i in range(len(data["types"])):
            outs.append(out_alias.get((nid, i)) or _internal_name(op, nid, i, reserved))
            names[(nid, i)] = outs[-1]
        ctx._current = data.get("name") or f"{op}_{nid}"
        lowering = get_op(op).lower
        if lowering is None:
            raise NotImplementedError(f"op '{op}' has no ONNX lowering")
        lowering(ctx, view, ins, outs)
    for key, oname in identities:
        ctx._current = oname
        ctx.node("Identity", [names[key]], [oname])

    outputs = [_value_info(oname, v.type, oname) for oname, v in graph.outputs]
    onnx_graph = helper.make_graph(ctx.nodes, name or graph.name, inputs, outputs,
                                   initializer=list(ctx.initializers.values()))
    opsets = [helper.make_opsetid("", opset)]
    if any(n.domain == "com.microsoft" for n in ctx.nodes):
        opsets.append(helper.make_opsetid("com.microsoft", 1))
    model = helper.make_model(onnx_graph, opset_imports=opsets,
                              producer_name=PRODUCER, producer_version=_version())
    model.ir_version = min(model.ir_version, 10)  # readable by onnxruntime releases of the last years
    for k, v in (metadata or {}).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = k, v
    return model


def _internal_name(op, nid, index, reserved):
    name = f"{op}.{nid}" + (f".{index}" if index else "")
    while name in reserved:
        name += "_"
    return name


def _version():
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("kgraph")
    except PackageNotFoundError:
        return "0"


def check(model: onnx.ModelProto) -> None:
    """onnx.checker with full shape/type checking."""
    onnx.checker.check_model(model, full_check=True)


