"""Independent NumPy reference of Keras 3 numerics (ground truth for kgraph tests).

Pure NumPy, no Keras import.  Everything is computed in float64 unless a
``dtype`` is passed where offered (the optimizers).

Formulas, defaults and the order of operations were transcribed from the
Keras 3 sources (keras 3.15.1 / 3.16.0, files named in each section):

* ``keras/src/optimizers/{sgd,adam,adamw,rmsprop,adagrad,adadelta,adamax,nadam}.py``
  and ``keras/src/optimizers/base_optimizer.py`` (clipping, weight decay),
  cross-read with the torch backend's ``keras/src/backend/torch/optimizers/*``
  (same maths, ``torch._foreach_*`` form).
* ``keras/src/losses/losses.py``, ``keras/src/losses/loss.py`` (reductions,
  sample weights), ``keras/src/backend/{numpy,torch}/nn.py`` (crossentropies).
* ``keras/src/metrics/{accuracy_metrics,regression_metrics,reduction_metrics,
  confusion_metrics,metrics_utils}.py``.
* ``keras/src/regularizers/regularizers.py``.

Keras's fuzz factor ``keras.config.epsilon()`` is 1e-7 (``EPSILON`` below).

Things worth knowing when comparing with Keras (all verified against real
Keras, see ``tests/test_reference_selfcheck.py``):

* RMSprop, Adagrad and Adadelta put epsilon *inside* the square root
  (``sqrt(v + eps)``); Adam / AdamW / Nadam add it *outside* (``sqrt(v) + eps``);
  Adamax adds it to the infinity norm: ``(1 - b1^t) * (u + eps)``.
* ``weight_decay`` (any optimizer; AdamW defaults to 0.004) is decoupled and
  applied *before* the update, with the current learning rate:
  ``p <- p - p * wd * lr``, after gradient clipping.
* Gradient clipping happens before weight decay and before the update:
  ``clipnorm`` clips each gradient tensor to L2 norm <= clipnorm,
  ``global_clipnorm`` scales all gradients by ``clip / max(global_norm, clip)``,
  ``clipvalue`` clips elementwise to [-v, v].  Only one may be set.
* ``keras.regularizers.l1_l2`` is the class ``L1L2`` whose defaults are
  ``l1=0.0, l2=0.0`` (tf.keras 2's ``l1_l2`` function defaulted to 0.01/0.01).
  ``L1`` stores its factor in a backend tensor, float32 under the default
  floatx (and always on TF), so a float64 weight is penalised with
  0.009999999776482582 instead of 0.01 (relative difference 2.2e-8).
* Off the TensorFlow backend Keras computes many float64 ops in float32
  (keras/src/backend/common/dtypes.py maps float64 -> float32 in
  ``result_type``, "to be aligned with JAX"): ``ops.mean``,
  ``ops.divide_no_nan`` (every loss reduction and metric result) and
  ``ops.maximum/minimum(tensor, python_float)`` (clipnorm, global_clipnorm).
  So float64 Keras on torch/JAX agrees with this reference to ~1e-7
  relative only; on TensorFlow it agrees to float64 round-off.
* Loss reduction ``sum_over_batch_size`` divides the (weighted) sum by the
  number of per-sample loss values, *not* by the sum of the sample weights;
  metrics built on ``keras.metrics.Mean`` divide by the sum of the weights.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np

EPSILON = 1e-7
FLOAT = np.float64

__all__ = [
    "EPSILON",
    # helpers
    "squeeze_or_expand_to_same_rank", "softmax", "log_softmax", "sigmoid",
    "softplus", "numeric_grad",
    # optimizers
    "Optimizer", "SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "Adadelta",
    "Adamax", "Nadam", "OPTIMIZERS", "clip_by_norm", "clip_by_global_norm",
    # losses
    "categorical_crossentropy", "sparse_categorical_crossentropy",
    "binary_crossentropy", "mean_squared_error", "mean_absolute_error",
    "mean_absolute_percentage_error", "mean_squared_logarithmic_error",
    "huber", "log_cosh", "hinge", "squared_hinge", "categorical_hinge",
    "kl_divergence", "poisson", "cosine_similarity", "LOSSES",
    "reduce_weighted_values", "loss", "loss_grad", "loss_and_grad",
    # metrics
    "binary_accuracy", "categorical_accuracy", "sparse_categorical_accuracy",
    "top_k_categorical_accuracy", "sparse_top_k_categorical_accuracy",
    "mean_metric", "metric", "root_mean_squared_error", "precision",
    "recall", "confusion_counts", "auc_confusion_variables", "auc",
    # regularizers
    "l1", "l2", "l1_l2", "regularizer_grad",
]


# ============================================================================
# Helpers
# ============================================================================

def _f(x, dtype=FLOAT) -> np.ndarray:
    return np.asarray(x, dtype=dtype)


def squeeze_or_expand_to_same_rank(x1, x2, expand_rank_1=True):
    """keras/src/losses/loss.py::squeeze_or_expand_to_same_rank.

    If the ranks differ by one and the longer one ends in a size-1 axis, that
    axis is squeezed; except that a rank-1 partner is expanded instead when
    ``expand_rank_1`` (the default).
    """
    x1 = np.asarray(x1)
    x2 = np.asarray(x2)
    r1, r2 = x1.ndim, x2.ndim
    if r1 == r2:
        return x1, x2
    if r1 == r2 + 1 and x1.shape[-1] == 1:
        if r2 == 1 and expand_rank_1:
            x2 = np.expand_dims(x2, -1)
        else:
            x1 = np.squeeze(x1, -1)
    if r2 == r1 + 1 and x2.shape[-1] == 1:
        if r1 == 1 and expand_rank_1:
            x1 = np.expand_dims(x1, -1)
        else:
            x2 = np.squeeze(x2, -1)
    return x1, x2


def softmax(z, axis=-1):
    z = _f(z)
    e = np.exp(z - np.max(z, axis=axis, keepdims=True))
    return e / np.sum(e, axis=axis, keepdims=True)


def log_softmax(z, axis=-1):
    z = _f(z)
    zs = z - np.max(z, axis=axis, keepdims=True)
    return zs - np.log(np.sum(np.exp(zs), axis=axis, keepdims=True))


def sigmoid(z):
    z = _f(z)
    out = np.empty_like(z)
    pos = z >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
    ez = np.exp(z[~pos])
    out[~pos] = ez / (1.0 + ez)
    return out


def softplus(z):
    z = _f(z)
    return np.maximum(z, 0.0) + np.log1p(np.exp(-np.abs(z)))


def numeric_grad(f: Callable[[np.ndarray], float], x, h: float = 1e-6) -> np.ndarray:
    """Central-difference gradient of scalar ``f`` at ``x`` (float64)."""
    x = np.array(x, dtype=np.float64, copy=True)
    g = np.zeros_like(x)
    flat_x = x.reshape(-1)
    flat_g = g.reshape(-1)
    for i in range(flat_x.size):
        orig = flat_x[i]
        flat_x[i] = orig + h
        fp = float(f(x))
        flat_x[i] = orig - h
        fm = float(f(x))
        flat_x[i] = orig
        flat_g[i] = (fp - fm) / (2.0 * h)
    return g


# ============================================================================
# Optimizers  (keras/src/optimizers/*.py, base_optimizer.py)
# ============================================================================

def clip_by_norm(g: np.ndarray, clipnorm: float) -> np.ndarray:
    """BaseOptimizer._clip_by_norm: g * c / max(||g||_2, c) (per tensor)."""
    l2sum = np.sum(np.square(g))
    l2norm = np.sqrt(l2sum) if l2sum > 0 else l2sum
    return g * g.dtype.type(clipnorm) / np.maximum(l2norm, g.dtype.type(clipnorm))


def clip_by_global_norm(grads: Sequence[np.ndarray], clip_norm: float) -> list:
    """base_optimizer.clip_by_global_norm.

    scale = c * min(1/global_norm, 1/c) (+ (norm - norm) so that a non-finite
    norm gives NaN, as in Keras).
    """
    dtype = grads[0].dtype.type if grads else FLOAT
    use_norm = np.sqrt(np.sum([np.sum(np.square(g)) for g in grads]))
    use_norm = dtype(use_norm)
    c = dtype(clip_norm)
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = c * np.minimum(dtype(1.0) / use_norm, dtype(1.0) / c)
        scale = scale + (use_norm - use_norm)
    return [g * scale for g in grads]


class Optimizer:
    """Base class: clipping, decoupled weight decay, iteration count.

    ``step(params, grads)`` returns *new* arrays (the inputs are not
    modified) and advances the internal state (slots, ``iterations``).

    ``learning_rate`` is a float, or a callable ``lr(iterations)`` (like a
    ``keras.optimizers.schedules.LearningRateSchedule``, which Keras calls
    with the number of steps already taken).

    Order of one Keras step (BaseOptimizer._backend_apply_gradients):
      1. grads = clip(grads)        (clipnorm | global_clipnorm | clipvalue)
      2. p = p - p * wd * lr        (only if weight_decay is not None)
      3. update_step(...)           (uses t = iterations + 1)
      4. iterations += 1
    """

    def __init__(self, learning_rate=0.001, weight_decay=None, clipnorm=None,
                 clipvalue=None, global_clipnorm=None, dtype=FLOAT):
        n_clip = sum(a is not None for a in (clipnorm, clipvalue, global_clipnorm))
        if n_clip > 1:
            raise ValueError("Only one of `clipnorm`, `clipvalue` and "
                             "`global_clipnorm` can be set.")
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.clipnorm = clipnorm
        self.clipvalue = clipvalue
        self.global_clipnorm = global_clipnorm
        self.dtype = np.dtype(dtype)
        self.iterations = 0
        self.built = False

    # -- pieces ------------------------------------------------------------
    def _c(self, x):
        """Cast a Python scalar to the optimizer's dtype."""
        return self.dtype.type(x)

    def current_learning_rate(self):
        lr = self.learning_rate
        if callable(lr):
            lr = lr(self.iterations)
        return self._c(lr)

    def clip_gradients(self, grads):
        if self.clipnorm and self.clipnorm > 0:
            return [clip_by_norm(g, self.clipnorm) for g in grads]
        if self.global_clipnorm and self.global_clipnorm > 0:
            return clip_by_global_norm(grads, self.global_clipnorm)
        if self.clipvalue and self.clipvalue > 0:
            v = self._c(self.clipvalue)
            return [np.clip(g, -v, v) for g in grads]
        return list(grads)

    def apply_weight_decay(self, params, lr):
        if self.weight_decay is None:
            return params
        wd = self._c(self.weight_decay)
        return [p - p * wd * lr for p in params]

    def build(self, params):  # create slots
        pass

    def update(self, params, grads, lr):  # in place on the copies
        raise NotImplementedError

    # -- public --------------------------------------------------------------
    def step(self, params, grads):
        params = [np.array(p, dtype=self.dtype, copy=True) for p in params]
        grads = [np.array(g, dtype=self.dtype, copy=True) for g in grads]
        if len(params) != len(grads):
            raise ValueError("params and grads must have the same length")
        for p, g in zip(params, grads):
            if p.shape != g.shape:
                raise ValueError(f"shape mismatch {p.shape} vs {g.shape}")
        if not self.built:
            self.build(params)
            self.built = True
        lr = self.current_learning_rate()
        grads = self.clip_gradients(grads)
        params = self.apply_weight_decay(params, lr)
        self.update(params, grads, lr)
        self.iterations += 1
        return params

    def _zeros(self, params, value=0.0):
        return [np.full(p.shape, value, dtype=self.dtype) for p in params]


class SGD(Optimizer):
    """keras/src/optimizers/sgd.py.

    momentum == 0:  p -= lr * g
    else:           m = momentum * m - lr * g
                    nesterov: p += momentum * m - lr * g
                    else:     p += m
    """

    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False, **kw):
        super().__init__(learning_rate=learning_rate, **kw)
        if momentum < 0 or momentum > 1:
            raise ValueError("`momentum` must be a float between [0, 1].")
        self.momentum = momentum
        self.nesterov = nesterov

    def build(self, params):
        self.momentums = self._zeros(params) if self.momentum != 0 else []

    def update(self, params, grads, lr):
        if self.momentum == 0:
            for p, g in zip(params, grads):
                p -= g * lr
            return
        mom = self._c(self.momentum)
        for p, g, m in zip(params, grads, self.momentums):
            m[...] = m * mom - g * lr
            if self.nesterov:
                p += m * mom - g * lr
            else:
                p += m


class Adam(Optimizer):
    """keras/src/optimizers/adam.py.

    t = iterations + 1
    alpha = lr * sqrt(1 - b2^t) / (1 - b1^t)
    m += (g - m) * (1 - b1);  v += (g^2 - v) * (1 - b2)
    amsgrad: v_hat = max(v_hat, v); use v_hat
    p -= alpha * m / (sqrt(v) + eps)
    """

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999,
                 epsilon=1e-7, amsgrad=False, **kw):
        super().__init__(learning_rate=learning_rate, **kw)
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.amsgrad = amsgrad

    def build(self, params):
        self.momentums = self._zeros(params)
        self.velocities = self._zeros(params)
        self.velocity_hats = self._zeros(params) if self.amsgrad else []

    def update(self, params, grads, lr):
        c = self._c
        t = c(self.iterations + 1)
        b1, b2 = c(self.beta_1), c(self.beta_2)
        beta_1_power = b1 ** t
        beta_2_power = b2 ** t
        alpha = lr * np.sqrt(c(1) - beta_2_power) / (c(1) - beta_1_power)
        for i, (p, g) in enumerate(zip(params, grads)):
            m, v = self.momentums[i], self.velocities[i]
            m += (g - m) * (c(1) - b1)
            v += (np.square(g) - v) * (c(1) - b2)
            if self.amsgrad:
                vh = self.velocity_hats[i]
                vh[...] = np.maximum(vh, v)
                v = vh
            p -= (m * alpha) / (np.sqrt(v) + c(self.epsilon))


class AdamW(Adam):
    """keras/src/optimizers/adamw.py: Adam + decoupled weight decay (0.004)."""

    def __init__(self, learning_rate=0.001, weight_decay=0.004, beta_1=0.9,
                 beta_2=0.999, epsilon=1e-7, amsgrad=False, **kw):
        if weight_decay is None:
            raise ValueError("Argument `weight_decay` must be a float.")
        super().__init__(learning_rate=learning_rate, beta_1=beta_1,
                         beta_2=beta_2, epsilon=epsilon, amsgrad=amsgrad,
                         weight_decay=weight_decay, **kw)


class RMSprop(Optimizer):
    """keras/src/optimizers/rmsprop.py  (epsilon INSIDE the sqrt).

    v = rho * v + (1 - rho) * g^2
    centered: a = rho * a + (1 - rho) * g;  denom = v - a^2 + eps
    else:     denom = v + eps
    inc = lr * g / sqrt(denom)
    momentum > 0: mo = momentum * mo + inc;  p -= mo
    else:         p -= inc
    """

    def __init__(self, learning_rate=0.001, rho=0.9, momentum=0.0,
                 epsilon=1e-7, centered=False, **kw):
        super().__init__(learning_rate=learning_rate, **kw)
        self.rho = rho
        self.momentum = momentum
        self.epsilon = epsilon
        self.centered = centered

    def build(self, params):
        self.velocities = self._zeros(params)
        self.momentums = self._zeros(params) if self.momentum > 0 else []
        self.average_gradients = self._zeros(params) if self.centered else []

    def update(self, params, grads, lr):
        c = self._c
        rho = c(self.rho)
        eps = c(self.epsilon)
        for i, (p, g) in enumerate(zip(params, grads)):
            v = self.velocities[i]
            v[...] = rho * v + (c(1) - rho) * np.square(g)
            if self.centered:
                a = self.average_gradients[i]
                a[...] = rho * a + (c(1) - rho) * g
                denom = v - np.square(a) + eps
            else:
                denom = v + eps
            inc = (lr * g) / np.sqrt(denom)
            if self.momentum > 0:
                mo = self.momentums[i]
                mo[...] = c(self.momentum) * mo + inc
                p -= mo
            else:
                p -= inc


class Adagrad(Optimizer):
    """keras/src/optimizers/adagrad.py  (epsilon INSIDE the sqrt).

    acc (init 0.1) += g^2;  p -= lr * g / sqrt(acc + eps)
    """

    def __init__(self, learning_rate=0.001, initial_accumulator_value=0.1,
                 epsilon=1e-7, **kw):
        super().__init__(learning_rate=learning_rate, **kw)
        self.initial_accumulator_value = initial_accumulator_value
        self.epsilon = epsilon

    def build(self, params):
        self.accumulators = self._zeros(params, self.initial_accumulator_value)

    def update(self, params, grads, lr):
        eps = self._c(self.epsilon)
        for p, g, acc in zip(params, grads, self.accumulators):
            acc += np.square(g)
            p -= (lr * g) / np.sqrt(acc + eps)


class Adadelta(Optimizer):
    """keras/src/optimizers/adadelta.py  (epsilon INSIDE the sqrt).

    Eg  = rho * Eg + (1 - rho) * g^2
    d   = -sqrt(Edx + eps) * g / sqrt(Eg + eps)      (Edx: previous value)
    Edx = rho * Edx + (1 - rho) * d^2
    p  += lr * d
    """

    def __init__(self, learning_rate=0.001, rho=0.95, epsilon=1e-7, **kw):
        super().__init__(learning_rate=learning_rate, **kw)
        self.rho = rho
        self.epsilon = epsilon

    def build(self, params):
        self.accumulated_grads = self._zeros(params)
        self.accumulated_delta_vars = self._zeros(params)

    def update(self, params, grads, lr):
        c = self._c
        rho, eps = c(self.rho), c(self.epsilon)
        for p, g, eg, edx in zip(params, grads, self.accumulated_grads,
                                 self.accumulated_delta_vars):
            eg[...] = rho * eg + (c(1) - rho) * np.square(g)
            delta = -(np.sqrt(edx + eps) * g) / np.sqrt(eg + eps)
            edx[...] = rho * edx + (c(1) - rho) * np.square(delta)
            p += lr * delta


class Adamax(Optimizer):
    """keras/src/optimizers/adamax.py.

    m += (g - m) * (1 - b1);  u = max(b2 * u, |g|)
    p -= lr * m / ((1 - b1^t) * (u + eps))
    """

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999,
                 epsilon=1e-7, **kw):
        super().__init__(learning_rate=learning_rate, **kw)
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon

    def build(self, params):
        self.m = self._zeros(params)
        self.u = self._zeros(params)

    def update(self, params, grads, lr):
        c = self._c
        t = c(self.iterations + 1)
        b1, b2 = c(self.beta_1), c(self.beta_2)
        beta_1_power = b1 ** t
        for p, g, m, u in zip(params, grads, self.m, self.u):
            m += (g - m) * (c(1) - b1)
            u[...] = np.maximum(b2 * u, np.abs(g))
            p -= (lr * m) / ((c(1) - beta_1_power) * (u + c(self.epsilon)))


class Nadam(Optimizer):
    """keras/src/optimizers/nadam.py (momentum decay 0.96 schedule).

    t = iterations + 1
    u_t   = b1 * (1 - 0.5 * 0.96^t);  u_t1 = b1 * (1 - 0.5 * 0.96^(t+1))
    u_product (init 1) *= u_t;        u_product_t1 = u_product * u_t1
    m += (g - m) * (1 - b1);  v += (g^2 - v) * (1 - b2)
    m_hat = u_t1 * m / (1 - u_product_t1) + (1 - u_t) * g / (1 - u_product)
    v_hat = v / (1 - b2^t)
    p -= lr * m_hat / (sqrt(v_hat) + eps)
    """

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999,
                 epsilon=1e-7, **kw):
        super().__init__(learning_rate=learning_rate, **kw)
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon

    def build(self, params):
        self.momentums = self._zeros(params)
        self.velocities = self._zeros(params)
        self.u_product = self._c(1.0)

    def update(self, params, grads, lr):
        c = self._c
        t = c(self.iterations + 1)
        t1 = c(self.iterations + 2)
        decay = c(0.96)
        b1, b2 = c(self.beta_1), c(self.beta_2)
        u_t = b1 * (c(1) - c(0.5) * decay ** t)
        u_t_1 = b1 * (c(1) - c(0.5) * decay ** t1)
        self.u_product = self.u_product * u_t
        u_product_t = self.u_product
        u_product_t_1 = u_product_t * u_t_1
        beta_2_power = b2 ** t
        for p, g, m, v in zip(params, grads, self.momentums, self.velocities):
            m += (g - m) * (c(1) - b1)
            v += (np.square(g) - v) * (c(1) - b2)
            m_hat = (u_t_1 * m) / (c(1) - u_product_t_1) + \
                ((c(1) - u_t) * g) / (c(1) - u_product_t)
            v_hat = v / (c(1) - beta_2_power)
            p -= (m_hat * lr) / (np.sqrt(v_hat) + c(self.epsilon))


OPTIMIZERS = {
    "sgd": SGD, "adam": Adam, "adamw": AdamW, "rmsprop": RMSprop,
    "adagrad": Adagrad, "adadelta": Adadelta, "adamax": Adamax, "nadam": Nadam,
}


# ============================================================================
# Losses  (keras/src/losses/losses.py, loss.py, backend nn.py)
# Each function returns the per-sample loss (last axis reduced) in float64.
# ============================================================================

def _aligned(y_true, y_pred):
    y_pred = _f(y_pred)
    y_true = _f(y_true)
    return squeeze_or_expand_to_same_rank(y_true, y_pred)


def categorical_crossentropy(y_true, y_pred, from_logits=False,
                             label_smoothing=0.0, axis=-1):
    """-sum(y * log q) over ``axis``.

    probabilities: p = y_pred / sum(y_pred); q = clip(p, eps, 1 - eps)
    logits:        log q = log_softmax(y_pred)
    label_smoothing: y = y * (1 - ls) + ls / num_classes
    """
    y_pred = _f(y_pred)
    y_true = _f(y_true)
    if label_smoothing:
        k = y_pred.shape[axis]
        y_true = y_true * (1.0 - label_smoothing) + label_smoothing / k
    if from_logits:
        log_prob = log_softmax(y_pred, axis=axis)
    else:
        p = y_pred / np.sum(y_pred, axis=axis, keepdims=True)
        p = np.clip(p, EPSILON, 1.0 - EPSILON)
        log_prob = np.log(p)
    return -np.sum(y_true * log_prob, axis=axis)


def _sparse_labels(y_true, y_pred):
    y_true = np.asarray(y_true)
    if y_true.ndim == np.ndim(y_pred) and y_true.shape[-1] == 1:
        y_true = np.squeeze(y_true, -1)
    return y_true.astype(np.int64)


def _one_hot(labels, num_classes):
    return (labels[..., None] == np.arange(num_classes)).astype(FLOAT)


def sparse_categorical_crossentropy(y_true, y_pred, from_logits=False, axis=-1):
    """Same as categorical_crossentropy with one-hot(y_true) (axis=-1 only)."""
    if axis != -1:
        raise NotImplementedError("only axis=-1")
    y_pred = _f(y_pred)
    labels = _sparse_labels(y_true, y_pred)
    return categorical_crossentropy(_one_hot(labels, y_pred.shape[-1]),
                                    y_pred, from_logits=from_logits)


def binary_crossentropy(y_true, y_pred, from_logits=False,
                        label_smoothing=0.0, axis=-1):
    """mean over ``axis`` of the elementwise BCE.

    probabilities: q = clip(y_pred, eps, 1 - eps);
                   -(y * log q + (1 - y) * log(1 - q))
    logits:        max(z, 0) - z * y + log1p(exp(-|z|))   (stable form used
                   by the torch/TF/JAX backends; the *numpy* backend instead
                   clips sigmoid(z) to [eps, 1-eps], which only differs for
                   |z| > ~16)
    label_smoothing: y = y * (1 - ls) + 0.5 * ls
    """
    y_pred = _f(y_pred)
    y_true = _f(y_true)
    if label_smoothing:
        y_true = y_true * (1.0 - label_smoothing) + 0.5 * label_smoothing
    if from_logits:
        z = y_pred
        bce = np.maximum(z, 0.0) - z * y_true + np.log1p(np.exp(-np.abs(z)))
    else:
        q = np.clip(y_pred, EPSILON, 1.0 - EPSILON)
        bce = -(y_true * np.log(q) + (1.0 - y_true) * np.log(1.0 - q))
    return np.mean(bce, axis=axis)


def mean_squared_error(y_true, y_pred):
    y_true, y_pred = _aligned(y_true, y_pred)
    return np.mean(np.square(y_true - y_pred), axis=-1)


def mean_absolute_error(y_true, y_pred):
    y_true, y_pred = _aligned(y_true, y_pred)
    return np.mean(np.abs(y_true - y_pred), axis=-1)


def mean_absolute_percentage_error(y_true, y_pred):
    """100 * mean(|y - p| / max(|y|, eps))."""
    y_true, y_pred = _aligned(y_true, y_pred)
    diff = np.abs((y_true - y_pred) / np.maximum(np.abs(y_true), EPSILON))
    return 100.0 * np.mean(diff, axis=-1)


def mean_squared_logarithmic_error(y_true, y_pred):
    """mean((log(max(p, eps) + 1) - log(max(y, eps) + 1))^2)."""
    y_true, y_pred = _aligned(y_true, y_pred)
    first = np.log(np.maximum(y_pred, EPSILON) + 1.0)
    second = np.log(np.maximum(y_true, EPSILON) + 1.0)
    return np.mean(np.square(first - second), axis=-1)


def huber(y_true, y_pred, delta=1.0):
    """mean(0.5 e^2 if |e| <= delta else delta*|e| - 0.5 delta^2), e = p - y."""
    y_true, y_pred = _aligned(y_true, y_pred)
    err = y_pred - y_true
    a = np.abs(err)
    return np.mean(np.where(a <= delta, 0.5 * np.square(err),
                            delta * a - 0.5 * delta ** 2), axis=-1)


def log_cosh(y_true, y_pred):
    """mean(x + softplus(-2x) - log 2), x = p - y  (== log(cosh(x)))."""
    y_true, y_pred = _aligned(y_true, y_pred)
    x = y_pred - y_true
    return np.mean(x + softplus(-2.0 * x) - np.log(2.0), axis=-1)


def _hinge_labels(y_true):
    """convert_binary_labels_to_hinge: if *all* labels are 0/1 -> 2y - 1."""
    y_true = _f(y_true)
    if np.all((y_true == 0) | (y_true == 1)):
        return 2.0 * y_true - 1.0
    return y_true


def hinge(y_true, y_pred):
    y_pred = _f(y_pred)
    y = _hinge_labels(y_true)
    return np.mean(np.maximum(1.0 - y * y_pred, 0.0), axis=-1)


def squared_hinge(y_true, y_pred):
    y_pred = _f(y_pred)
    y = _hinge_labels(y_true)
    return np.mean(np.square(np.maximum(1.0 - y * y_pred, 0.0)), axis=-1)


def categorical_hinge(y_true, y_pred):
    """max(max((1 - y) * p) - sum(y * p) + 1, 0)."""
    y_pred = _f(y_pred)
    y_true = _f(y_true)
    pos = np.sum(y_true * y_pred, axis=-1)
    neg = np.max((1.0 - y_true) * y_pred, axis=-1)
    return np.maximum(neg - pos + 1.0, 0.0)


def kl_divergence(y_true, y_pred):
    """sum(y * log(y / p)) with y, p clipped to [eps, 1]."""
    y = np.clip(_f(y_true), EPSILON, 1.0)
    p = np.clip(_f(y_pred), EPSILON, 1.0)
    return np.sum(y * np.log(y / p), axis=-1)


def poisson(y_true, y_pred):
    """mean(p - y * log(p + eps))."""
    y_pred = _f(y_pred)
    y_true = _f(y_true)
    return np.mean(y_pred - y_true * np.log(y_pred + EPSILON), axis=-1)


def _l2_normalize(x, axis=-1):
    """keras.ops.normalize(order=2): x * min(rsqrt(sum x^2), 1/eps)."""
    sq = np.sum(np.square(x), axis=axis, keepdims=True)
    with np.errstate(divide="ignore"):
        inv = 1.0 / np.sqrt(sq)
    return x * np.minimum(inv, 1.0 / EPSILON)


def cosine_similarity(y_true, y_pred, axis=-1):
    """-sum(l2_normalize(y) * l2_normalize(p)) (the loss is the negative)."""
    y_true, y_pred = _aligned(y_true, y_pred)
    return -np.sum(_l2_normalize(y_true, axis) * _l2_normalize(y_pred, axis),
                   axis=axis)


# -- per-sample derivatives d l_i / d y_pred (same shape as aligned y_pred) --
# At kinks (|x| at 0, clip/max boundaries) these follow torch's autograd
# convention: clip passes the gradient on the closed interval, maximum splits
# it 1/2 - 1/2 on a tie, abs/sign give 0 at 0.

def _d_categorical_crossentropy(y_true, y_pred, from_logits=False,
                                label_smoothing=0.0, axis=-1):
    if axis != -1:
        raise NotImplementedError("only axis=-1")
    y_pred = _f(y_pred)
    y_true = _f(y_true)
    if label_smoothing:
        k = y_pred.shape[-1]
        y_true = y_true * (1.0 - label_smoothing) + label_smoothing / k
    if from_logits:
        return softmax(y_pred) * np.sum(y_true, -1, keepdims=True) - y_true
    s = np.sum(y_pred, -1, keepdims=True)
    p = y_pred / s
    q = np.clip(p, EPSILON, 1.0 - EPSILON)
    inside = (p >= EPSILON) & (p <= 1.0 - EPSILON)
    d_p = np.where(inside, -y_true / q, 0.0)           # dl/dp
    # p_j = y_j / s  ->  dp_j/dy_k = (delta_jk - p_j) / s
    return (d_p - np.sum(d_p * p, -1, keepdims=True)) / s


def _d_sparse_categorical_crossentropy(y_true, y_pred, from_logits=False, axis=-1):
    y_pred = _f(y_pred)
    labels = _sparse_labels(y_true, y_pred)
    return _d_categorical_crossentropy(_one_hot(labels, y_pred.shape[-1]),
                                       y_pred, from_logits=from_logits, axis=axis)


def _d_binary_crossentropy(y_true, y_pred, from_logits=False,
                           label_smoothing=0.0, axis=-1):
    if axis != -1:
        raise NotImplementedError("only axis=-1")
    y_pred = _f(y_pred)
    y_true = _f(y_true)
    k = y_pred.shape[-1]
    if label_smoothing:
        y_true = y_true * (1.0 - label_smoothing) + 0.5 * label_smoothing
    if from_logits:
        return (sigmoid(y_pred) - y_true) / k
    q = np.clip(y_pred, EPSILON, 1.0 - EPSILON)
    inside = (y_pred >= EPSILON) & (y_pred <= 1.0 - EPSILON)
    return np.where(inside, (q - y_true) / (q * (1.0 - q)), 0.0) / k


def _d_mean_squared_error(y_true, y_pred):
    y_true, y_pred = _aligned(y_true, y_pred)
    return 2.0 * (y_pred - y_true) / y_pred.shape[-1]


def _d_mean_absolute_error(y_true, y_pred):
    y_true, y_pred = _aligned(y_true, y_pred)
    return np.sign(y_pred - y_true) / y_pred.shape[-1]


def _d_mean_absolute_percentage_error(y_true, y_pred):
    y_true, y_pred = _aligned(y_true, y_pred)
    den = np.maximum(np.abs(y_true), EPSILON)
    return 100.0 * np.sign(y_pred - y_true) / den / y_pred.shape[-1]


def _d_mean_squared_logarithmic_error(y_true, y_pred):
    y_true, y_pred = _aligned(y_true, y_pred)
    mp = np.maximum(y_pred, EPSILON)
    first = np.log(mp + 1.0)
    second = np.log(np.maximum(y_true, EPSILON) + 1.0)
    dmax = np.where(y_pred > EPSILON, 1.0, np.where(y_pred == EPSILON, 0.5, 0.0))
    return 2.0 * (first - second) / (mp + 1.0) * dmax / y_pred.shape[-1]


def _d_huber(y_true, y_pred, delta=1.0):
    y_true, y_pred = _aligned(y_true, y_pred)
    err = y_pred - y_true
    d = np.where(np.abs(err) <= delta, err, delta * np.sign(err))
    return d / y_pred.shape[-1]


def _d_log_cosh(y_true, y_pred):
    y_true, y_pred = _aligned(y_true, y_pred)
    return np.tanh(y_pred - y_true) / y_pred.shape[-1]


def _d_relu_like(x):
    """torch: d max(x, 0)/dx = 1 for x > 0, 0.5 at 0, 0 below."""
    return np.where(x > 0, 1.0, np.where(x == 0, 0.5, 0.0))


def _d_hinge(y_true, y_pred):
    y_pred = _f(y_pred)
    y = _hinge_labels(y_true)
    y = np.broadcast_to(y, y_pred.shape)
    m = 1.0 - y * y_pred
    return -y * _d_relu_like(m) / y_pred.shape[-1]


def _d_squared_hinge(y_true, y_pred):
    y_pred = _f(y_pred)
    y = _hinge_labels(y_true)
    y = np.broadcast_to(y, y_pred.shape)
    m = 1.0 - y * y_pred
    return -2.0 * y * np.maximum(m, 0.0) / y_pred.shape[-1]


def _d_categorical_hinge(y_true, y_pred):
    y_pred = _f(y_pred)
    y_true = _f(y_true)
    pos = np.sum(y_true * y_pred, -1, keepdims=True)
    masked = (1.0 - y_true) * y_pred
    neg = np.max(masked, -1, keepdims=True)
    # torch's max(dim) routes the gradient to one argmax
    onehot = _one_hot(np.argmax(masked, -1), y_pred.shape[-1])
    d_inner = (1.0 - y_true) * onehot - y_true
    return d_inner * _d_relu_like(neg - pos + 1.0)


def _d_kl_divergence(y_true, y_pred):
    y_pred = _f(y_pred)
    y = np.clip(_f(y_true), EPSILON, 1.0)
    p = np.clip(y_pred, EPSILON, 1.0)
    inside = (y_pred >= EPSILON) & (y_pred <= 1.0)
    return np.where(inside, -y / p, 0.0)


def _d_poisson(y_true, y_pred):
    y_pred = _f(y_pred)
    y_true = _f(y_true)
    return (1.0 - y_true / (y_pred + EPSILON)) / y_pred.shape[-1]


def _d_cosine_similarity(y_true, y_pred, axis=-1):
    if axis != -1:
        raise NotImplementedError("only axis=-1")
    y_true, y_pred = _aligned(y_true, y_pred)
    yn = _l2_normalize(y_true)
    sq = np.sum(np.square(y_pred), -1, keepdims=True)
    norm = np.sqrt(sq)
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / norm
        capped = inv > 1.0 / EPSILON
        u = y_pred * np.minimum(inv, 1.0 / EPSILON)
        # regular branch: d(-yn . p/|p|)/dp = -(yn - (yn . u) u) / |p|
        g = -(yn - np.sum(yn * u, -1, keepdims=True) * u) * inv
    return np.where(capped, -yn / EPSILON, g)


LOSSES = {
    "categorical_crossentropy": (categorical_crossentropy, _d_categorical_crossentropy),
    "sparse_categorical_crossentropy": (sparse_categorical_crossentropy,
                                        _d_sparse_categorical_crossentropy),
    "binary_crossentropy": (binary_crossentropy, _d_binary_crossentropy),
    "mean_squared_error": (mean_squared_error, _d_mean_squared_error),
    "mean_absolute_error": (mean_absolute_error, _d_mean_absolute_error),
    "mean_absolute_percentage_error": (mean_absolute_percentage_error,
                                       _d_mean_absolute_percentage_error),
    "mean_squared_logarithmic_error": (mean_squared_logarithmic_error,
                                       _d_mean_squared_logarithmic_error),
    "huber": (huber, _d_huber),
    "log_cosh": (log_cosh, _d_log_cosh),
    "hinge": (hinge, _d_hinge),
    "squared_hinge": (squared_hinge, _d_squared_hinge),
    "categorical_hinge": (categorical_hinge, _d_categorical_hinge),
    "kl_divergence": (kl_divergence, _d_kl_divergence),
    "poisson": (poisson, _d_poisson),
    "cosine_similarity": (cosine_similarity, _d_cosine_similarity),
}
_LOSS_ALIASES = {
    "mse": "mean_squared_error", "mae": "mean_absolute_error",
    "mape": "mean_absolute_percentage_error",
    "msle": "mean_squared_logarithmic_error", "kld": "kl_divergence",
    "logcosh": "log_cosh", "huber_loss": "huber",
}


def _loss_fns(name):
    name = _LOSS_ALIASES.get(name, name)
    if name not in LOSSES:
        raise KeyError(f"unknown loss {name!r}")
    return LOSSES[name]


def _unbroadcast(x, shape):
    """Sum ``x`` over the axes that broadcasting added to reach its shape."""
    while x.ndim > len(shape):
        x = x.sum(axis=0)
    for i, d in enumerate(shape):
        if d == 1 and x.shape[i] != 1:
            x = x.sum(axis=i, keepdims=True)
    return x


def _sw_and_divisor(values_shape, sample_weight, reduction):
    """(W, div) with reduced loss = sum(W * values) / div, W of values_shape.

    Mirrors loss.py::reduce_weighted_values / reduce_values.
    """
    vals = np.zeros(values_shape)
    if sample_weight is None:
        w = np.ones(values_shape)
        n = vals.size
    else:
        v_al, sw_al = squeeze_or_expand_to_same_rank(vals, _f(sample_weight))
        prod_shape = np.broadcast_shapes(v_al.shape, sw_al.shape)
        n = int(np.prod(prod_shape))
        w = _unbroadcast(np.broadcast_to(sw_al, prod_shape), v_al.shape)
        w = np.reshape(w, values_shape)
    if reduction in ("sum_over_batch_size", "mean"):
        div = float(n)
    elif reduction == "mean_with_sample_weight":
        div = float(np.sum(sample_weight)) if sample_weight is not None else float(n)
    elif reduction == "sum":
        div = 1.0
    else:
        raise ValueError(f"reduction {reduction!r} has no scalar value")
    return w, div


def reduce_weighted_values(values, sample_weight=None,
                           reduction="sum_over_batch_size"):
    """loss.py::reduce_weighted_values (no masks).

    sum_over_batch_size / mean: sum(values * sw) / number of values
    mean_with_sample_weight:    sum(values * sw) / sum(sw)
    sum:                        sum(values * sw)
    none / None:                values * sw
    (divide_no_nan: 0 when the divisor is 0)
    """
    values = _f(values)
    if sample_weight is not None:
        values, sw = squeeze_or_expand_to_same_rank(values, _f(sample_weight))
        values = values * sw
    if reduction is None or reduction == "none" or values.shape in ((), (0,)):
        return values
    total = np.sum(values)
    if reduction == "sum":
        return float(total)
    if reduction == "mean_with_sample_weight" and sample_weight is not None:
        div = float(np.sum(sample_weight))
    elif reduction in ("sum_over_batch_size", "mean", "mean_with_sample_weight"):
        div = float(values.size)
    else:
        raise ValueError(f"unknown reduction {reduction!r}")
    return float(total / div) if div != 0 else 0.0


def loss(name, y_true, y_pred, sample_weight=None,
         reduction="sum_over_batch_size", **kwargs):
    """Value of ``keras.losses.<Class>(**kwargs)(y_true, y_pred, sample_weight)``.

    Like LossFunctionWrapper.call, y_true/y_pred are first aligned with
    squeeze_or_expand_to_same_rank.
    """
    fn, _ = _loss_fns(name)
    y_true, y_pred = squeeze_or_expand_to_same_rank(y_true, _f(y_pred))
    values = fn(y_true, y_pred, **kwargs)
    return reduce_weighted_values(values, sample_weight, reduction)


def loss_grad(name, y_true, y_pred, sample_weight=None,
              reduction="sum_over_batch_size", **kwargs):
    """d loss(name, ...) / d y_pred, same shape as ``y_pred`` (analytic)."""
    _, dfn = _loss_fns(name)
    y_pred = _f(y_pred)
    orig_shape = y_pred.shape
    y_true_a, y_pred_a = squeeze_or_expand_to_same_rank(y_true, y_pred)
    dl = dfn(y_true_a, y_pred_a, **kwargs)
    values_shape = y_pred_a.shape[:-1]
    w, div = _sw_and_divisor(values_shape, sample_weight, reduction)
    if div == 0:
        return np.zeros(orig_shape)
    g = dl * (np.asarray(w)[..., None] / div)
    return np.reshape(g, orig_shape)


def loss_and_grad(name, y_true, y_pred, sample_weight=None,
                  reduction="sum_over_batch_size", **kwargs):
    return (loss(name, y_true, y_pred, sample_weight, reduction, **kwargs),
            loss_grad(name, y_true, y_pred, sample_weight, reduction, **kwargs))


# ============================================================================
# Metrics  (keras/src/metrics/*.py)
# ============================================================================

def binary_accuracy(y_true, y_pred, threshold=0.5):
    """Elementwise 1.0 where (y_pred > threshold) == y_true (strict >)."""
    y_true, y_pred = squeeze_or_expand_to_same_rank(np.asarray(y_true),
                                                    np.asarray(y_pred))
    pred = (y_pred > threshold).astype(y_true.dtype)
    return (y_true == pred).astype(FLOAT)


def categorical_accuracy(y_true, y_pred):
    """argmax(y_true) == argmax(y_pred) (first index wins ties)."""
    return (np.argmax(y_true, -1) == np.argmax(y_pred, -1)).astype(FLOAT)


def sparse_categorical_accuracy(y_true, y_pred):
    y_pred = np.asarray(y_pred)
    y_true = _f(y_true)
    if y_true.ndim == y_pred.ndim and y_true.shape[-1] == 1:
        y_true = np.squeeze(y_true, -1)
    return (np.argmax(y_pred, -1).astype(FLOAT) == y_true).astype(FLOAT)


def _in_top_k(targets, predictions, k):
    """ops.in_top_k: pred[target] >= k-th largest (ties count as hits)."""
    predictions = _f(predictions)
    k = min(k, predictions.shape[-1])
    kth = np.sort(predictions, -1)[..., -k]
    tv = np.take_along_axis(predictions, targets[..., None].astype(np.int64), -1)[..., 0]
    return tv >= kth


def top_k_categorical_accuracy(y_true, y_pred, k=5):
    y_pred = _f(y_pred)
    targets = np.argmax(y_true, -1)
    return _in_top_k(targets, y_pred, k).astype(FLOAT)


def sparse_top_k_categorical_accuracy(y_true, y_pred, k=5):
    y_pred = _f(y_pred)
    return _in_top_k(_sparse_labels(y_true, y_pred), y_pred, k).astype(FLOAT)


def mean_metric(values, sample_weight=None):
    """keras.metrics.Mean on fresh state (reduce_to_samplewise_values).

    Values of rank > 1 are first averaged per sample (over the axes the
    weight does not cover); weighted: sum(w * v) / sum(w); else mean over
    samples.  divide_no_nan.
    """
    values = _f(values)
    if sample_weight is not None:
        sw = _f(sample_weight)
        values, sw = squeeze_or_expand_to_same_rank(values, sw)
        wn, vn = sw.ndim, values.ndim
        if vn > wn:
            values = np.mean(values, axis=tuple(range(wn, vn)))
        sw = np.broadcast_to(sw, values.shape)
        values = values * sw
        if wn > 1:
            sw = np.mean(sw, axis=tuple(range(1, wn)))
    if values.ndim > 1:
        values = np.mean(values, axis=tuple(range(1, values.ndim)))
    total = np.sum(values)
    if sample_weight is not None:
        count = np.sum(sw)
    elif values.ndim >= 1:
        count = values.shape[0]
    else:
        count = 1
    return float(total / count) if count != 0 else 0.0


_METRIC_FNS = {
    "binary_accuracy": binary_accuracy,
    "categorical_accuracy": categorical_accuracy,
    "sparse_categorical_accuracy": sparse_categorical_accuracy,
    "top_k_categorical_accuracy": top_k_categorical_accuracy,
    "sparse_top_k_categorical_accuracy": sparse_top_k_categorical_accuracy,
}


def metric(name, y_true, y_pred, sample_weight=None, **kwargs):
    """Result of a fresh MeanMetricWrapper metric after one update_state.

    ``name`` is an accuracy function name above or any loss name in LOSSES
    (keras.metrics.MeanSquaredError, ...), or "root_mean_squared_error".
    """
    if name in ("root_mean_squared_error", "rmse"):
        return root_mean_squared_error(y_true, y_pred, sample_weight)
    if name in _METRIC_FNS:
        fn = _METRIC_FNS[name]
    else:
        fn = _loss_fns(name)[0]
    return mean_metric(fn(y_true, y_pred, **kwargs), sample_weight)


def root_mean_squared_error(y_true, y_pred, sample_weight=None):
    """sqrt(Mean(square(p - y)))  (keras.metrics.RootMeanSquaredError)."""
    y_true, y_pred = _aligned(y_true, y_pred)
    return math.sqrt(mean_metric(np.square(y_pred - y_true), sample_weight))


def _confusion_weights(y_true, y_pred, sample_weight):
    """Align labels/predictions/weights as update_confusion_matrix_variables."""
    y_pred, y_true = squeeze_or_expand_to_same_rank(_f(y_pred), _f(y_true))
    if sample_weight is None:
        w = np.ones(y_pred.shape)
    else:
        sw = np.expand_dims(_f(sample_weight), -1)
        _, sw = squeeze_or_expand_to_same_rank(y_true, sw, expand_rank_1=False)
        w = np.broadcast_to(sw, y_pred.shape)
    return y_true.reshape(-1), y_pred.reshape(-1), np.reshape(w, -1)


def confusion_counts(y_true, y_pred, threshold=0.5, sample_weight=None):
    """(tp, fp, tn, fn) with prediction positive iff y_pred > threshold and
    label positive iff y_true != 0 (weighted sums)."""
    yt, yp, w = _confusion_weights(y_true, y_pred, sample_weight)
    lab = yt.astype(bool)
    pos = yp > threshold
    tp = float(np.sum(w[lab & pos]))
    fp = float(np.sum(w[~lab & pos]))
    tn = float(np.sum(w[~lab & ~pos]))
    fn = float(np.sum(w[lab & ~pos]))
    return tp, fp, tn, fn


def _div_no_nan(a, b):
    a = _f(a)
    b = _f(b)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(b == 0, 0.0, a / np.where(b == 0, 1.0, b))


def precision(y_true, y_pred, threshold=0.5, sample_weight=None):
    """keras.metrics.Precision(thresholds=threshold): tp / (tp + fp)."""
    tp, fp, _, _ = confusion_counts(y_true, y_pred, threshold, sample_weight)
    return float(_div_no_nan(tp, tp + fp))


def recall(y_true, y_pred, threshold=0.5, sample_weight=None):
    """keras.metrics.Recall(thresholds=threshold): tp / (tp + fn)."""
    tp, _, _, fn = confusion_counts(y_true, y_pred, threshold, sample_weight)
    return float(_div_no_nan(tp, tp + fn))


def auc_confusion_variables(y_true, y_pred, num_thresholds=200,
                            sample_weight=None, from_logits=False):
    """TP/FP/TN/FN arrays (length num_thresholds) as keras.metrics.AUC builds
    them (metrics_utils._update_confusion_matrix_variables_optimized).

    thresholds = [-eps, 1/(n-1), ..., (n-2)/(n-1), 1+eps]; a prediction counts
    as positive at threshold i iff p > thresholds[i].  Keras implements this
    with buckets: p is clipped to [0, 1], bucket = max(ceil(p*(n-1)) - 1, 0),
    and tp[i] = sum of positive weights in buckets >= i.
    """
    yp = _f(y_pred)
    if from_logits:
        yp = sigmoid(yp)
    yt, yp, w = _confusion_weights(y_true, yp, sample_weight)
    yp = np.clip(yp, 0.0, 1.0)
    yt = yt.astype(bool).astype(FLOAT)
    true_labels = yt * w
    false_labels = (1.0 - yt) * w
    bucket = np.maximum(np.ceil(yp * (num_thresholds - 1)) - 1, 0).astype(np.int64)
    tp_b = np.bincount(bucket, weights=true_labels, minlength=num_thresholds)
    fp_b = np.bincount(bucket, weights=false_labels, minlength=num_thresholds)
    tp = np.cumsum(tp_b[::-1])[::-1]
    fp = np.cumsum(fp_b[::-1])[::-1]
    tn = np.sum(false_labels) - fp
    fn = np.sum(true_labels) - tp
    return tp, fp, tn, fn


def auc(y_true, y_pred, num_thresholds=200, curve="ROC",
        summation_method="interpolation", sample_weight=None,
        from_logits=False):
    """keras.metrics.AUC (single label) result after one update_state.

    ROC: x = FPR, y = TPR; PR: x = recall, y = precision; PRGAIN as Keras.
    interpolation: trapezoid heights (y[i] + y[i+1]) / 2 (ROC, PRGAIN);
    PR + interpolation uses Keras's interpolate_pr_auc (Davis & Goadrich).
    minoring / majoring: min / max of neighbouring heights.
    AUC = sum((x[i] - x[i+1]) * height[i]).
    """
    curve = curve.upper()
    summation_method = summation_method.lower()
    tp, fp, tn, fn = auc_confusion_variables(y_true, y_pred, num_thresholds,
                                             sample_weight, from_logits)
    n = num_thresholds
    if curve == "PR" and summation_method == "interpolation":
        dtp = tp[: n - 1] - tp[1:]
        p = tp + fp
        dp = p[: n - 1] - p[1:]
        prec_slope = _div_no_nan(dtp, np.maximum(dp, 0))
        intercept = tp[1:] - prec_slope * p[1:]
        safe_p_ratio = np.where((p[: n - 1] > 0) & (p[1:] > 0),
                                _div_no_nan(p[: n - 1], np.maximum(p[1:], 0)),
                                np.ones_like(p[1:]))
        with np.errstate(divide="ignore", invalid="ignore"):
            log_ratio = np.log(safe_p_ratio)
        inc = _div_no_nan(prec_slope * (dtp + intercept * log_ratio),
                          np.maximum(tp[1:] + fn[1:], 0))
        return float(np.sum(inc))
    rec = _div_no_nan(tp, tp + fn)
    if curve == "ROC":
        x = _div_no_nan(fp, fp + tn)
        y = rec
    elif curve == "PR":
        x = rec
        y = _div_no_nan(tp, tp + fp)
    elif curve == "PRGAIN":
        scaling = _div_no_nan(tp + fn, tn + fp)
        recall_gain = 1.0 - scaling * _div_no_nan(fn, tp)
        precision_gain = 1.0 - scaling * _div_no_nan(fp, tp)
        recall_gain = np.where(tp == 0, 0.0, recall_gain)
        precision_gain = np.where(tp == 0, 1.0, precision_gain)
        x = np.maximum(recall_gain, 0.0)
        y = precision_gain
    else:
        raise ValueError(f"unknown curve {curve!r}")
    if summation_method == "interpolation":
        heights = (y[: n - 1] + y[1:]) / 2.0
    elif summation_method == "minoring":
        heights = np.minimum(y[: n - 1], y[1:])
    elif summation_method == "majoring":
        heights = np.maximum(y[: n - 1], y[1:])
    else:
        raise ValueError(f"unknown summation_method {summation_method!r}")
    return float(np.sum((x[: n - 1] - x[1:]) * heights))


# ============================================================================
# Regularizers  (keras/src/regularizers/regularizers.py)
# ============================================================================

def l1(w, l1=0.01):
    """keras.regularizers.L1(l1=0.01): l1 * sum(|w|)."""
    return float(l1 * np.sum(np.abs(_f(w))))


def l2(w, l2=0.01):
    """keras.regularizers.L2(l2=0.01): l2 * sum(w^2)  (no 1/2 factor)."""
    return float(l2 * np.sum(np.square(_f(w))))


def l1_l2(w, l1=0.0, l2=0.0):
    """keras.regularizers.L1L2 / l1_l2 (same class in Keras 3): defaults 0.0!"""
    w = _f(w)
    return float(l1 * np.sum(np.abs(w)) + l2 * np.sum(np.square(w)))


def regularizer_grad(name, w, **kwargs):
    """d penalty / d w for "l1", "l2", "l1_l2" (sign(0) = 0)."""
    w = _f(w)
    if name == "l1":
        return kwargs.get("l1", 0.01) * np.sign(w)
    if name == "l2":
        return 2.0 * kwargs.get("l2", 0.01) * w
    if name in ("l1_l2", "L1L2"):
        return kwargs.get("l1", 0.0) * np.sign(w) + 2.0 * kwargs.get("l2", 0.0) * w
    raise KeyError(name)
