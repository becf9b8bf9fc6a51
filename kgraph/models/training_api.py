"""compile / fit / evaluate / train_on_batch / test_on_batch: the training half of a Model.

compile() only records the configuration; the train-step and eval graphs are derived
on first use, when the labels' shapes are known, and cached per label signature."""
from __future__ import annotations

import math

import numpy as np

from kgraph import callbacks as callbacks_mod
from kgraph import losses as losses_mod
from kgraph import metrics as metrics_mod
from kgraph import optimizers as optimizers_mod
from kgraph import utils
from kgraph.distribute import fit_support as dist

# float arrays found free of NaN and inf: id -> (weak reference, memory signature)
_FINITE: dict = {}


def _all_finite(arr) -> bool:
    """Whether a float array holds no NaN or inf. One summing pass in the array's own type
    (a NaN or inf anywhere makes the sum non-finite; only then, or when a huge but finite
    sum overflowed, look element by element). The answer is remembered for the same array
    object over the same memory, shape and type, so fit called once per epoch on the same
    data reads it once (the pass costs as much as a small model's epoch of steps: 12 ms for
    60,000x784 float32); data changed in place after a check is not read again."""
    import weakref
    sig = (arr.__array_interface__["data"][0], arr.shape, arr.strides, arr.dtype.str)
    seen = _FINITE.get(id(arr))
    if seen is not None and seen[0]() is arr and seen[1] == sig:
        return True
    if not np.isfinite(arr.sum()) and not np.isfinite(arr).all():
        return False
    for key in [k for k, (ref, _) in _FINITE.items() if ref() is None]:
        del _FINITE[key]
    try:
        _FINITE[id(arr)] = (weakref.ref(arr), sig)
    except TypeError:   # not weak-referenceable: checked every time
        pass
    return True


def resolve_batch_size(batch_size):
    """Keras's default of 32, and a clear error for anything but a positive integer."""
    batch_size = 32 if batch_size is None else batch_size
    if not isinstance(batch_size, (int, np.integer)) or isinstance(batch_size, bool) or batch_size <= 0:
        raise ValueError(f"Expected `batch_size` to be a positive integer. Received: batch_size={batch_size!r}")
    return int(batch_size)


class CompiledSpec:
    def __init__(self, optimizer, losses, loss_weights, metric_ids):
        self.optimizer, self.losses, self.loss_weights, self.metric_ids = optimizer, losses, loss_weights, metric_ids
        self.metrics = []  # (output index, Metric), resolved with the label shapes


class TrainingAPI:
    def __init__(self):
        self.optimizer = None
        self.compiled = False
        self.stop_training = False
        self._compiled_spec = None
        self._runners = {}
        self._state = None
        self.history = None
        self._initial_epoch = None

    # -- compile -------------------------------------------------------------
    def compile(self, optimizer="rmsprop", loss=None, loss_weights=None, metrics=None,
                weighted_metrics=None, run_eagerly=False, steps_per_execution=1, jit_compile="auto",
                **kwargs):
        if kwargs:
            raise TypeError(f"compile() got unexpected keyword arguments {sorted(kwargs)}")
        self._ensure_compiled_model()
        opt = optimizers_mod.get(optimizer)
        n_out = len(self.outputs)
        names = self.output_names()
        if loss is None:
            raise ValueError("compile() needs a `loss`. Received: loss=None")
        if isinstance(loss, dict):
            unknown = set(loss) - set(names)
            if unknown:
                raise ValueError(f"compile(): `loss` names unknown outputs {sorted(unknown)}; the "
                                 f"model's outputs are {names}")
            loss_list = [losses_mod.get(loss[n]) if n in loss else None for n in names]
        elif isinstance(loss, (list, tuple)):
            if len(loss) != n_out:
                raise ValueError(f"compile(): `loss` has {len(loss)} entries for {n_out} outputs {names}")
            loss_list = [losses_mod.get(l) for l in loss]
        else:
            loss_list = [losses_mod.get(loss) for _ in range(n_out)]
        if loss_weights is None:
            lw = [1.0] * n_out
        elif isinstance(loss_weights, dict):
            lw = [float(loss_weights.get(n, 1.0)) for n in names]
        else:
            if len(loss_weights) != n_out:
                raise ValueError(f"compile(): `loss_weights` has {len(loss_weights)} entries for "
                                 f"{n_out} outputs {names}")
            lw = [float(w) for w in loss_weights]
        metric_ids = self._normalize_metric_ids(metrics, names)
        # resolve names now so that a typo fails at compile time
        for oi, mid in metric_ids:
            if isinstance(mid, str):
                metrics_mod.get(mid, (None, 2), (None, 2))
        if not isinstance(steps_per_execution, (int, np.integer)) or steps_per_execution < 1:
            raise ValueError(f"compile(): `steps_per_execution` must be a positive integer. "
                             f"Received: steps_per_execution={steps_per_execution!r}")
        self.steps_per_execution = int(steps_per_execution)
        self.optimizer = opt
        self._compiled_spec = CompiledSpec(opt, loss_list, lw, metric_ids)
        self._compiled_spec.distribute = dist.scoped_strategy()  # `with strategy.scope():`
        self._runners = {}
        if self._state is not None:
            self._state.detach()
        self._state = None
        self.compiled = True

    def _normalize_metric_ids(self, metrics, names):
        if metrics is None:
            return []
        if isinstance(metrics, dict):
            out = []
            for n, ms in metrics.items():
                if n not in names:
                    raise ValueError(f"compile(): `metrics` names unknown output '{n}'; outputs are {names}")
                for m in ms if isinstance(ms, (list, tuple)) else [ms]:
                    out.append((names.index(n), m))
            return out
        if not isinstance(metrics, (list, tuple)):
            raise ValueError(f"compile(): `metrics` must be a list or a dict. Received: metrics={metrics!r}")
        if len(names) > 1 and metrics and all(isinstance(m, (list, tuple)) for m in metrics):
            return [(i, m) for i, ms in enumerate(metrics) for m in ms]
        return [(i, m) for i in range(len(names)) for m in metrics]

    def _ensure_compiled_model(self):
        if not self.built:
            raise ValueError(f"Model '{self.name}' has not been built yet: give it an input shape "
                             f"(an Input layer) or call it on data before compile().")

    # -- data ------------------------------------------------------------------
    def _standardize_targets(self, y):
        names = self.output_names()
        if isinstance(y, dict):
            missing = [n for n in names if n not in y]
            if missing:
                raise ValueError(f"Model '{self.name}': missing targets for outputs {missing}. "
                                 f"Received keys: {sorted(y)}")
            ys = [y[n] for n in names]
        elif isinstance(y, (list, tuple)) and len(names) > 1:
            ys = list(y)
        else:
            ys = [y]
        if len(ys) != len(names):
            raise ValueError(f"Model '{self.name}' has {len(names)} outputs {names} but received "
                             f"{len(ys)} target arrays")
        out = []
        for n, t, arr in zip(names, self.outputs, ys):
            arr = np.asarray(arr)
            if arr.ndim == 1 and len(t.shape) == 2:
                arr = arr.reshape(-1, 1) if t.shape[-1] == 1 else arr
            if arr.dtype.kind not in "fiub":
                raise ValueError(f"Targets for output '{n}' must be numeric. Received dtype {arr.dtype}")
            out.append(np.ascontiguousarray(arr, dtype=np.float32))
        return out

    def _check_labels(self, ys):
        spec = self._compiled_spec
        for n, t, arr, loss in zip(self.output_names(), self.outputs, ys, spec.losses):
            if loss is None:
                continue
            sparse = "sparse" in loss.name
            pred_shape = t.shape
            if sparse:
                ok = arr.ndim in (len(pred_shape) - 1, len(pred_shape)) and (
                    arr.ndim == len(pred_shape) - 1 or arr.shape[-1] == 1)
                if ok and arr.size and (arr.min() < 0 or arr.max() >= pred_shape[-1]):
                    raise ValueError(f"Loss '{loss.name}' for output '{n}': labels must be integers in "
                                     f"[0, {pred_shape[-1]}). Received labels in [{arr.min():g}, {arr.max():g}]")
            else:
                ok = arr.ndim == len(pred_shape) and all(
                    e is None or e == r for e, r in zip(pred_shape[1:], arr.shape[1:]))
            if not ok:
                want = f"{(None,) + tuple(pred_shape[1:-1])} or {(None,) + tuple(pred_shape[1:-1]) + (1,)}" \
                    if sparse else f"{pred_shape}"
                raise ValueError(f"Loss '{loss.name}' for output '{n}' expects targets of shape {want}, "
                                 f"received targets of shape {arr.shape}")

    def _prepare(self, x, y, sample_weight=None, class_weight=None, what="fit"):
        if not self.compiled:
            raise RuntimeError(f"You must call `compile()` before using the model ({what}).")
        self._ensure_model_built(x)
        xs = self._standardize_inputs(x)
        if y is None:
            raise ValueError(f"{what}() needs targets `y`. Received: y=None")
        ys = self._standardize_targets(y)
        n = xs[0].shape[0]
        for name, arr in zip(self.output_names(), ys):
            if arr.shape[0] != n:
                raise ValueError(f"Data cardinality is ambiguous: x has {n} samples but y "
                                 f"('{name}') has {arr.shape[0]} samples. Make sure all arrays "
                                 f"contain the same number of samples.")
        for name, arr in zip(self.input_names() + self.output_names(), xs + ys):
            if arr.dtype.kind == "f" and not _all_finite(arr):
                raise ValueError(f"{what}(): the data for '{name}' contains NaN or infinite values "
                                 f"({int((~np.isfinite(arr)).sum())} entries)")
        self._check_labels(ys)
        sw = np.ones(n, np.float32)
        if sample_weight is not None:
            sample_weight = np.asarray(sample_weight, np.float32).reshape(-1)
            if sample_weight.shape[0] != n:
                raise ValueError(f"`sample_weight` has {sample_weight.shape[0]} entries for {n} samples")
            sw = sw * sample_weight
        if class_weight is not None:
            labels = ys[0]
            cls = labels.argmax(-1) if labels.ndim > 1 and labels.shape[-1] > 1 else labels.reshape(-1).round()
            sw = sw * np.array([class_weight.get(int(c), 1.0) for c in cls], np.float32)
        return xs, ys, sw

    # -- graphs ---------------------------------------------------------------------
    def _runner(self, kind, ys):
        from kgraph.lower import lower
        from kgraph.runtime.state import TrainingState
        from kgraph.runtime.trainer import StepRunner
        from kgraph.training.step_graph import build_eval_graph, build_train_graph
        spec = self._compiled_spec
        key = (kind,) + tuple((a.shape[1:], a.dtype.str) for a in ys)
        if key in self._runners:
            return self._runners[key]
        y_specs = [(n, (None,) + a.shape[1:], np.float32) for n, a in zip(self.output_names(), ys)]
        if not spec.metrics or getattr(spec, "_metric_key", None) != key[1:]:
            spec.metrics = [(oi, metrics_mod.get(mid, ys[oi].shape, self.outputs[oi].shape,
                                                 spec.losses[oi].name if spec.losses[oi] else ""))
                            for oi, mid in spec.metric_ids]
            names = self.output_names()
            if len(names) > 1:
                # Keras's logs for several outputs: '<output>_loss' per output and metric
                # names prefixed with their output ('digit_accuracy')
                for oi, metric in spec.metrics:
                    metric.name = f"{names[oi]}_{metric.name}"
                spec.metrics = [(oi, metrics_mod.OutputLoss(f"{names[oi]}_loss", loss))
                                for oi, loss in enumerate(spec.losses) if loss is not None] + spec.metrics
            spec._metric_key = key[1:]
        if self._state is None:
            self._state = TrainingState(self.weights, spec.optimizer)
        if dist.strategy_of(self) is not None:  # data-parallel: gradient graph, allreduce, update graph
            from kgraph.runtime.distributed import build_runner
            self._runners[key] = build_runner(kind, spec, self, y_specs, self._state, spec.distribute)
            return self._runners[key]
        build = build_train_graph if kind == "train" else build_eval_graph
        g, sig = build(spec, self, y_specs)
        self._state.register(sig, self.weights)
        host_types = {n: (v.shape, v.dtype) for n, v in g.outputs if not n.startswith("new/")}
        step_model = lower(g)
        runner = StepRunner(step_model, sig, self._state, host_types, train=(kind == "train"))
        runner.metric_objs = spec.metrics
        runner.ir = g
        runner.step_model = step_model
        runner.loops = {}
        self._runners[key] = runner
        return runner

    # -- steps ----------------------------------------------------------------------
    def _train_step(self, runner, batch):
        opt = self.optimizer
        out = runner.run(batch, lr=opt.current_learning_rate(), t=opt.iterations + 1)
        opt.iterations += 1
        return out

    @staticmethod
    def _metric_partials(runner, out):
        return [[np.array(out[n], np.float64) for n in names] for _, names in runner.sig.metric_outputs]

    @staticmethod
    def _logs(runner, loss_sum, count, totals):
        logs = {"loss": float(loss_sum / max(count, 1))}
        for (_, metric), tot in zip(runner.metric_objs, totals):
            logs[metric.name] = metric.result(tot)
        return logs

    def _run_epoch_in_loops(self, runner, sources, batch_size, order, cbs, steps):
        """Training epoch with `steps_per_execution` steps per onnxruntime call (an ONNX
        Loop over data bound once); batch callbacks run after each call, as in Keras."""
        import time

        from kgraph import config
        from kgraph.runtime.loop import LoopRunner
        k = self._steps_per_call(cbs)
        adaptive = k is None   # sized by time: the measured seconds per step are kept per runner
        loop = runner.loops.get(batch_size)
        if loop is None:
            loop = runner.loops[batch_size] = LoopRunner(runner.step_model, runner.sig, self._state, batch_size)
        loop.bind_data(sources, order)
        opt = self.optimizer
        loss_sum, count = 0.0, 0
        totals = [[np.zeros(np.shape(runner.host_outputs[name]), np.float64) for name in names]
                  for _, names in runner.sig.metric_outputs]
        batch_logs = cbs is not None and cbs.wants("on_train_batch_end")
        first = 0
        while first < steps:
            if adaptive:
                per_step = loop.seconds_per_step
                k = 8 if per_step is None else int(min(max(config.AUTO_CALL_SECONDS / per_step, 1),
                                                       config.AUTO_MAX_STEPS))
            count_k = min(k, steps - first)
            lrs = [opt.current_learning_rate() if i == 0 else self._lr_at(opt.iterations + i)
                   for i in range(count_k)]
            if cbs is not None and cbs.wants("on_train_batch_begin"):
                cbs.on_train_batch_begin(first)
            t0 = time.perf_counter()
            out = loop.run_steps(first, lrs, opt.iterations + 1)
            if adaptive and count_k >= 4:
                loop.seconds_per_step = (time.perf_counter() - t0) / count_k
            opt.iterations += count_k
            sizes = np.array([min(batch_size, len(order) - (first + i) * batch_size) for i in range(count_k)],
                             np.float64)
            loss_sum += float(np.dot(out["loss"].astype(np.float64), sizes))
            count += int(sizes.sum())
            for group, (_, names) in zip(totals, runner.sig.metric_outputs):
                for acc, name in zip(group, names):
                    acc += out[name].astype(np.float64).sum(axis=0)
            if batch_logs:
                cbs.on_train_batch_end(first + count_k - 1, self._logs(runner, loss_sum, count, totals))
            first += count_k
            if self.stop_training:
                break
        return self._logs(runner, loss_sum, count, totals)

    def _steps_per_call(self, cbs):
        """Steps per onnxruntime call: `steps_per_execution` when set above 1; otherwise, when
        no callback observes single batches, kgraph's own choice (config.auto_steps_per_call):
        the numbers are identical, only the per-call overhead is paid once per K steps."""
        from kgraph import config
        k = getattr(self, "steps_per_execution", 1)
        if k > 1:
            return k
        observed = cbs is not None and (cbs.wants("on_train_batch_begin") or cbs.wants("on_train_batch_end"))
        return 1 if observed else config.auto_steps_per_call()   # None: sized by time

    def _lr_at(self, iteration):
        from kgraph.schedules import LearningRateSchedule
        lr = self.optimizer.learning_rate
        return float(lr(iteration)) if isinstance(lr, LearningRateSchedule) else float(lr)

    def _run_epoch(self, runner, xs, ys, sw, batch_size, order, train, cbs=None, limit=None):
        """One pass over `order`; per step only the batch goes in and the loss and metric
        partials come out, accumulated here in float64."""
        sources = xs + ys + [sw]
        n = len(order)
        steps = math.ceil(n / batch_size) if limit is None else limit
        if limit is not None and steps * batch_size > n:
            # steps_per_epoch beyond the data: the order wraps around (same rule for K-step calls)
            order = np.concatenate([order] * math.ceil(steps * batch_size / n))
        k = self._steps_per_call(cbs) if train else 1
        if (k is None or k > 1) and not getattr(runner, "distributed", False):
            return self._run_epoch_in_loops(runner, sources, batch_size, order, cbs, steps)
        loss_sum, count = 0.0, 0
        totals = [[np.zeros(np.shape(runner.host_outputs[name]), np.float64) for name in names]
                  for _, names in runner.sig.metric_outputs]
        outs = [(acc, runner.host_outputs[name]) for group, (_, names) in zip(totals, runner.sig.metric_outputs)
                for acc, name in zip(group, names)]
        loss_out = runner.host_outputs["loss"]
        hook = "train_batch" if train else "test_batch"
        batch_logs = cbs is not None and cbs.wants(f"on_{hook}_end")
        batch_begin = cbs is not None and cbs.wants(f"on_{hook}_begin")
        opt = self.optimizer
        for step in range(steps):
            idx = order[step * batch_size:(step + 1) * batch_size]
            if batch_begin:
                getattr(cbs, f"on_{hook}_begin")(step)
            if train:
                runner.run_batch(sources, idx, lr=opt.current_learning_rate(), t=opt.iterations + 1)
                opt.iterations += 1
            else:
                runner.run_batch(sources, idx)
            loss_sum += float(loss_out) * len(idx)
            count += len(idx)
            for acc, out in outs:
                acc += out
            if batch_logs:
                getattr(cbs, f"on_{hook}_end")(step, self._logs(runner, loss_sum, count, totals))
            if train and self.stop_training:
                break
        return self._logs(runner, loss_sum, count, totals)

    def fit(self, x=None, y=None, batch_size=None, epochs=1, verbose="auto", callbacks=None,
            validation_split=0.0, validation_data=None, shuffle=True, class_weight=None,
            sample_weight=None, initial_epoch=0, steps_per_epoch=None, validation_steps=None,
            validation_batch_size=None, validation_freq=1):
        batch_size = resolve_batch_size(batch_size)
        if not 0 <= validation_split < 1:
            raise ValueError(f"`validation_split` must be in [0, 1). Received: validation_split={validation_split}")
        xs, ys, sw = self._prepare(x, y, sample_weight, class_weight, "fit")
        n = xs[0].shape[0]
        val = None
        if validation_data is not None:
            vx, vy = validation_data[0], validation_data[1]
            vsw = validation_data[2] if len(validation_data) > 2 else None
            val = self._prepare(vx, vy, vsw, None, "fit (validation_data)")
        elif validation_split:
            # Keras takes the *last* fraction, before any shuffling.
            split = int(n * (1.0 - validation_split))
            val = ([a[split:] for a in xs], [a[split:] for a in ys], sw[split:])
            xs, ys, sw = [a[:split] for a in xs], [a[:split] for a in ys], sw[:split]
            n = split
        runner = self._runner("train", ys)
        val_runner = self._runner("eval", val[1]) if val is not None else None
        steps = steps_per_epoch or math.ceil(n / batch_size)
        # Keras's CallbackList: a History (and a ProgbarLogger unless verbose=0) unless
        # given; params {'verbose', 'epochs', 'steps'} with verbose as passed ("auto" too).
        cbs = callbacks if isinstance(callbacks, callbacks_mod.CallbackList) else callbacks_mod.CallbackList(
            callbacks, add_history=True, add_progbar=verbose != 0 and dist.shows_progress(self), model=self,
            verbose=verbose, epochs=epochs, steps=steps)
        self.stop_training = False
        self._initial_epoch = None
        cbs.on_train_begin()
        # a callback may move the start (BackupAndRestore resuming an interrupted fit)
        initial_epoch, self._initial_epoch = self._initial_epoch or initial_epoch, None
        initial_epoch = dist.begin_fit(self, runner, xs + ys + [sw], initial_epoch)
        training_logs = {}
        for epoch in range(initial_epoch, epochs):
            cbs.on_epoch_begin(epoch)
            order = dist.epoch_order(self, utils.rng().permutation(n) if shuffle else np.arange(n))
            logs = self._run_epoch(runner, xs, ys, sw, batch_size, order, True, cbs, steps_per_epoch)
            if val_runner is not None and (epoch + 1) % validation_freq == 0:
                vlogs = self._test_loop(val_runner, val, validation_batch_size or batch_size, cbs,
                                        validation_steps)
                logs.update({f"val_{k}": v for k, v in vlogs.items()})
            cbs.on_epoch_end(epoch, logs)
            dist.agree_stop(self)
            training_logs = logs
            if self.stop_training:
                break
        cbs.on_train_end(training_logs)
        self._state.sync_to_host()
        return self.history

    def _test_loop(self, runner, data, batch_size, cbs, steps=None):
        """An evaluation pass between on_test_begin and on_test_end (evaluate, and fit's
        validation, which Keras runs through fit's own callbacks)."""
        xs, ys, sw = data
        cbs.on_test_begin()
        logs = self._run_epoch(runner, xs, ys, sw, batch_size, np.arange(len(sw)), False, cbs, steps)
        cbs.on_test_end(logs)
        return logs

    def evaluate(self, x=None, y=None, batch_size=None, verbose="auto", sample_weight=None, steps=None,
                 callbacks=None, return_dict=False):
        batch_size = resolve_batch_size(batch_size)
        xs, ys, sw = self._prepare(x, y, sample_weight, None, "evaluate")
        runner = self._runner("eval", ys)
        cbs = callbacks if isinstance(callbacks, callbacks_mod.CallbackList) else callbacks_mod.CallbackList(
            callbacks, add_progbar=verbose != 0 and dist.shows_progress(self), model=self, verbose=verbose, epochs=1,
            steps=steps or math.ceil(len(sw) / batch_size))
        logs = self._test_loop(runner, (xs, ys, sw), batch_size, cbs, steps)
        if return_dict:
            return logs
        vals = list(logs.values())
        return vals[0] if len(vals) == 1 else vals

    def train_on_batch(self, x, y=None, sample_weight=None, class_weight=None, return_dict=False):
        xs, ys, sw = self._prepare(x, y, sample_weight, class_weight, "train_on_batch")
        runner = self._runner("train", ys)
        out = self._train_step(runner, xs + ys + [sw])
        logs = self._logs(runner, float(out["loss"]), 1, self._metric_partials(runner, out))
        self._state.sync_to_host()
        return logs if return_dict else (list(logs.values()) if len(logs) > 1 else logs["loss"])

    def test_on_batch(self, x, y=None, sample_weight=None, return_dict=False):
        xs, ys, sw = self._prepare(x, y, sample_weight, None, "test_on_batch")
        runner = self._runner("eval", ys)
        out = runner.run(xs + ys + [sw])
        logs = self._logs(runner, float(out["loss"]), 1, self._metric_partials(runner, out))
        return logs if return_dict else (list(logs.values()) if len(logs) > 1 else logs["loss"])

    def get_weights(self):
        return [w.numpy().copy() for w in self.weights]



