"""Data-parallel train and eval steps: each rank runs its shard of every global batch.

A train step on rank r of N:
  1. rows: shard r of the global batch (consecutive shards, sizes differing by at most one)
  2. gradient graph on those rows -> one flat float32 buffer: this rank's gradients of its
     share of the global loss, its state updates, loss share and metric partials
  3. one in-place Allreduce (sum) of that buffer: Horovod's tensor fusion, one call per step
  4. update graph: the summed gradients (the buffer's prefix, bound once) + lr, t, weights,
     slots -> next weights and slots, written into the other buffer set of TrainingState
     (the same ping-pong as the fused single-process step)
The summed loss share is the global batch's loss and the summed partials are the global
batch's, so `_run_epoch` accumulates exactly what it does for one process. A rank whose
shard is empty (a last batch smaller than N) contributes zeros.
"""
from __future__ import annotations

import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from kgraph.runtime.session import create_session


def _ortvalue(arr):
    return ort.OrtValue.ortvalue_from_numpy(arr)


def shard_bounds(n: int, rank: int, size: int) -> tuple[int, int]:
    """Rows [lo, hi) of a batch of n rows that rank `rank` of `size` trains on."""
    base, extra = divmod(n, size)
    lo = rank * base + min(rank, extra)
    return lo, lo + base + (1 if rank < extra else 0)


def gather_inside(step, data_inputs):
    """The step model with its batch gathered in-graph: each data input X becomes
    Gather(all/X, shard/idx), so the whole arrays are bound once per fit and a step passes
    only this rank's row indices (cheaper than gathering the rows with numpy each step)."""
    g = step.graph
    kept = [i for i in g.input if i.name not in data_inputs]
    new_inputs = [helper.make_tensor_value_info("shard/idx", TensorProto.INT64, ["M"])]
    nodes = []
    for vi in g.input:
        if vi.name in data_inputs:
            t = vi.type.tensor_type
            dims = ["N"] + [d.dim_param or d.dim_value for d in t.shape.dim][1:]
            new_inputs.append(helper.make_tensor_value_info("all/" + vi.name, t.elem_type, dims))
            nodes.append(helper.make_node("Gather", ["all/" + vi.name, "shard/idx"], [vi.name], axis=0))
    out = onnx.ModelProto()
    out.CopyFrom(step)
    del out.graph.input[:]
    out.graph.input.extend(new_inputs + kept)
    del out.graph.node[:]
    out.graph.node.extend(nodes + list(g.node))
    return out


class _ShardedGraph:
    """A session over (all data, shard/idx) + shard_scale + weights -> reduce/flat, with
    its two parity bindings (weights read from the current buffer set)."""

    def __init__(self, onnx_model, sig, state, layout):
        self.sig, self.state, self.layout = sig, state, layout
        self.session = create_session(gather_inside(onnx_model, set(sig.data_inputs)))
        self.share = np.zeros((), np.float32)
        self.flat = np.zeros(layout.size, np.float32)
        self.bindings = []
        for parity in (0, 1):
            io = self.session.io_binding()
            bufs = state.buffers[parity]
            for name, _ in sig.weight_inputs:
                io.bind_ortvalue_input(name, _ortvalue(bufs[name]))
            io.bind_ortvalue_input("shard_scale", _ortvalue(self.share))
            io.bind_ortvalue_output("reduce/flat", _ortvalue(self.flat))
            self.bindings.append(io)
        self._idx: dict[int, np.ndarray] = {}      # index buffers by shard length
        self._bound_idx = [None, None]
        self._sources, self._data_key = None, None

    def run(self, sources, idx, share):
        """Fills self.flat from rows `idx` of `sources` (zeros when idx is empty)."""
        if len(idx) == 0:
            self.flat[...] = 0
            return
        key = tuple(id(a) for a in sources)
        if key != self._data_key:
            self._sources = [np.ascontiguousarray(a) for a in sources]   # kept alive while bound
            for io in self.bindings:
                for name, arr in zip(self.sig.data_inputs, self._sources):
                    io.bind_ortvalue_input("all/" + name, _ortvalue(arr))
            self._data_key = key
            self._keep = sources      # the ids in the key stay valid while bound
        buf = self._idx.get(len(idx))
        if buf is None:
            buf = self._idx[len(idx)] = np.empty(len(idx), np.int64)
        np.copyto(buf, idx, casting="unsafe")
        parity = self.state.parity
        io = self.bindings[parity]
        if self._bound_idx[parity] is not buf:
            io.bind_ortvalue_input("shard/idx", _ortvalue(buf))
            self._bound_idx[parity] = buf
        self.share[...] = share
        self.session.run_with_iobinding(io)


class DistributedRunner:
    """Runs the sharded step; API of StepRunner (run_batch, run, host_outputs, sig)."""
    distributed = True

    def __init__(self, strategy, state, grad_model, grad_sig, layout, update_model=None,
                 update_sig=None):
        self.strategy, self.state, self.layout = strategy, state, layout
        self.sig = grad_sig
        self.train = update_model is not None
        self.grads = _ShardedGraph(grad_model, grad_sig, state, layout)
        self.host_outputs = {}
        self._host = []     # (host array, offset, size)
        self._state_updates = []
        for role, name, shape, dtype, off, size in layout.entries:
            if role in ("loss", "metric"):
                arr = self.host_outputs[name] = np.zeros(shape, dtype)
                self._host.append((arr, off, size))
            elif role == "state":
                self._state_updates.append((name, shape, off, size))
        self.timings = {"compute": 0.0, "allreduce": 0.0, "steps": 0}
        if self.train:
            self.lr = np.zeros((), np.float32)
            self.t = np.zeros((), np.float32)
            self.update = create_session(update_model)
            self.update_sig = update_sig
            summed = self.grads.flat[:layout.grad_size]      # a contiguous prefix view
            self.update_bindings = []
            for parity in (0, 1):
                io = self.update.io_binding()
                bufs, other = state.buffers[parity], state.buffers[1 - parity]
                io.bind_ortvalue_input("grads/flat", _ortvalue(summed))
                io.bind_ortvalue_input("lr", _ortvalue(self.lr))
                io.bind_ortvalue_input("t", _ortvalue(self.t))
                for name, _ in update_sig.weight_inputs + update_sig.slot_inputs:
                    io.bind_ortvalue_input(name, _ortvalue(bufs[name]))
                for out, inp in update_sig.feedback:
                    io.bind_ortvalue_output(out, _ortvalue(other[inp]))
                self.update_bindings.append(io)

    # -- one step ---------------------------------------------------------------------
    def run_batch(self, sources, idx, lr=None, t=None):
        """One step on the global batch `idx` (rows of `sources`); this rank takes its shard."""
        strategy = self.strategy
        lo, hi = shard_bounds(len(idx), strategy.rank, strategy.size)
        self.state.reload()
        t0 = time.perf_counter()
        self.grads.run(sources, idx[lo:hi], (hi - lo) / max(len(idx), 1))
        t1 = time.perf_counter()
        strategy.allreduce_(self.grads.flat)
        t2 = time.perf_counter()
        flat = self.grads.flat
        for arr, off, size in self._host:
            arr[...] = flat[off:off + size].reshape(arr.shape)
        if self.train:
            nxt = self.state.buffers[1 - self.state.parity]
            for name, shape, off, size in self._state_updates:
                np.copyto(nxt[name], flat[off:off + size].reshape(shape))
            self.lr[...] = lr
            self.t[...] = t
            self.update.run_with_iobinding(self.update_bindings[self.state.parity])
            self.state.stepped()
        t3 = time.perf_counter()
        tm = self.timings
        tm["compute"] += (t1 - t0) + (t3 - t2)
        tm["allreduce"] += t2 - t1
        tm["steps"] += 1
        return self.host_outputs

    def run(self, data, lr=None, t=None):
        """One step on whole arrays `data` (sig.data_inputs order), e.g. train_on_batch."""
        data = [np.ascontiguousarray(a) for a in data]
        return self.run_batch(data, np.arange(len(data[0])), lr, t)

    # -- state ----------------------------------------------------------------------
    def sync_from_chief(self, optimizer=None):
        """Every rank takes rank 0's weights and optimizer state (one Bcast of their bytes),
        in both buffer sets; and rank 0's optimizer step count and learning rate (a number;
        a schedule follows the step count)."""
        state = self.state
        state.reload()
        cur, other = state.buffers[state.parity], state.buffers[1 - state.parity]
        names = sorted(cur)
        arrays = [cur[n] for n in names]
        lr = None
        if optimizer is not None:
            count = np.array([optimizer.iterations], np.int64)
            arrays.append(count)
            from kgraph.schedules import LearningRateSchedule
            if not isinstance(optimizer.learning_rate, LearningRateSchedule):
                lr = np.array([float(optimizer.learning_rate)], np.float64)
                arrays.append(lr)
        self.strategy.broadcast_arrays_(arrays)
        for n in names:
            np.copyto(other[n], cur[n])
        if optimizer is not None:
            optimizer.iterations = int(count[0])
            if lr is not None:
                optimizer.learning_rate = float(lr[0])
        state._ahead = True


def build_runner(kind, spec, model, y_specs, state, strategy):
    """The data-parallel counterpart of Model._runner's graphs: 'train' (gradient graph +
    update graph) or 'eval' (sharded eval graph), registered in the shared TrainingState."""
    from kgraph.lower import lower
    from kgraph.training.step_graph import build_sharded_eval_graph, build_sharded_train_graphs

    def register(sig):
        state.register(sig, model.weights)

    if kind == "train":
        g, sig, u, usig, layout = build_sharded_train_graphs(spec, model, y_specs)
        register(sig)
        register(usig)
        runner = DistributedRunner(strategy, state, lower(g), sig, layout, lower(u), usig)
        runner.ir = (g, u)
        runner.sync_from_chief(spec.optimizer)   # rank 0's start, for train_on_batch too
    else:
        g, sig, layout = build_sharded_eval_graph(spec, model, y_specs)
        register(sig)
        runner = DistributedRunner(strategy, state, lower(g), sig, layout)
        runner.ir = g
    runner.metric_objs = spec.metrics
    runner.loops = {}
    return runner
