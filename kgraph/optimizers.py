"""Optimizers with Keras 3 defaults and update formulas, emitted as IR ops into the
train-step graph. The learning rate and the step count are graph inputs, so schedules
and callbacks change them without recompiling.

Order per step, as Keras's base optimizer: clip gradients (clipvalue, clipnorm per
tensor, global_clipnorm over all), apply weight decay (w -= w*wd*lr), then the update.
"""
from __future__ import annotations

import warnings

import numpy as np

from kgraph.ir import ops


class Optimizer:
    slot_names: tuple = ()
    default_lr = 0.001

    def __init__(self, learning_rate=None, weight_decay=None, clipnorm=None, clipvalue=None,
                 global_clipnorm=None, name=None, **kwargs):
        if "lr" in kwargs:
            warnings.warn(f"{type(self).__name__}: the `lr` argument is deprecated, use "
                          f"`learning_rate` instead.", DeprecationWarning, stacklevel=3)
            if learning_rate is None:
                learning_rate = kwargs.pop("lr")
            else:
                kwargs.pop("lr")
        for k in ("decay", "use_ema", "ema_momentum", "ema_overwrite_frequency", "loss_scale_factor",
                  "gradient_accumulation_steps"):
            kwargs.pop(k, None)
        if kwargs:
            raise TypeError(f"{type(self).__name__} got unexpected keyword arguments {sorted(kwargs)}")
        if sum(x is not None for x in (clipnorm, clipvalue, global_clipnorm)) > 1:
            raise ValueError("Only one of `clipnorm`, `clipvalue` and `global_clipnorm` can be set. "
                             f"Received: clipnorm={clipnorm}, clipvalue={clipvalue}, "
                             f"global_clipnorm={global_clipnorm}")
        self.learning_rate = self.default_lr if learning_rate is None else learning_rate
        self.weight_decay, self.clipnorm, self.clipvalue = weight_decay, clipnorm, clipvalue
        self.global_clipnorm = global_clipnorm
        self.name = name or type(self).__name__.lower()
        self.iterations = 0

    # -- host side -------------------------------------------------------------
    @property
    def learning_rate(self):
        return self._learning_rate

    @learning_rate.setter
    def learning_rate(self, value):
        from kgraph.schedules import LearningRateSchedule
        if not isinstance(value, LearningRateSchedule) and not np.isscalar(value) and np.ndim(value) != 0:
            raise ValueError(f"{type(self).__name__}: `learning_rate` must be a float or a "
                             f"LearningRateSchedule. Received: learning_rate={value!r}")
        if np.isscalar(value) and float(value) < 0:
            raise ValueError(f"{type(self).__name__}: `learning_rate` must be >= 0. "
                             f"Received: learning_rate={value!r}")
        self._learning_rate = value

    lr = learning_rate

    def current_learning_rate(self) -> float:
        from kgraph.schedules import LearningRateSchedule
        lr = self._learning_rate
        return float(lr(self.iterations)) if isinstance(lr, LearningRateSchedule) else float(lr)

    def slot_initial(self, name, var_value):
        return np.zeros_like(var_value)

    def slot_scale(self, name) -> float:
        """The runtime holds slot `name` as Keras's value times this (an optimizer may keep
        a rescaled slot when that saves work per step); saving and restoring convert."""
        return 1.0

    def global_slots(self) -> dict:
        return {}

    # -- in the graph -------------------------------------------------------------
    def clip(self, grads):
        if self.clipvalue is not None:
            grads = [ops.clip(g, -self.clipvalue, self.clipvalue) for g in grads]
        if self.clipnorm is not None:
            grads = [g * (self.clipnorm / ops.maximum(ops.sqrt(ops.reduce_sum(g * g)), self.clipnorm))
                     for g in grads]
        if self.global_clipnorm is not None:
            total = None
            for g in grads:
                s = ops.reduce_sum(g * g)
                total = s if total is None else total + s
            norm = ops.sqrt(total)
            scale = self.global_clipnorm / ops.maximum(norm, self.global_clipnorm)
            grads = [g * scale for g in grads]
        return grads

    def build_update(self, params, grads, slots, gslots, lr, t):
        """params/grads: Values, the gradients already clipped (`clip` works per variable,
        the update may see several variables laid end to end in one flat tensor, so every
        step after clipping is elementwise); slots: one dict per param {slot name: Value};
        gslots: dict; lr, t: scalar Values (t = iteration count + 1).
        Returns (params', slots', gslots')."""
        if self.weight_decay:
            params = [p - p * (self.weight_decay * lr) for p in params]
        gnew = self.update_globals(gslots, t)
        new_p, new_s = [], []
        for p, g, s in zip(params, grads, slots):
            p2, s2 = self.update(p, g, s, lr, t, gnew)
            new_p.append(p2)
            new_s.append(s2)
        return new_p, new_s, gnew

    def update_globals(self, gslots, t):
        return dict(gslots)

    def update(self, p, g, s, lr, t, gslots):
        raise NotImplementedError

    def get_config(self):
        lr = self._learning_rate
        from kgraph.schedules import LearningRateSchedule
        return {"name": self.name, "learning_rate": lr.get_config() if isinstance(lr, LearningRateSchedule) else float(lr),
                "weight_decay": self.weight_decay, "clipnorm": self.clipnorm,
                "global_clipnorm": self.global_clipnorm, "clipvalue": self.clipvalue}


class SGD(Optimizer):
    default_lr = 0.01

    def __init__(self, learning_rate=None, momentum=0.0, nesterov=False, **kwargs):
        super().__init__(learning_rate, **kwargs)
        if not 0 <= momentum <= 1:
            raise ValueError(f"`momentum` must be a float between [0, 1]. Received: momentum={momentum}")
        self.momentum, self.nesterov = float(momentum), nesterov
        self.slot_names = ("momentum",) if self.momentum else ()

    def update(self, p, g, s, lr, t, gs):
        if not self.momentum:
            return p - lr * g, {}
        m = self.momentum * s["momentum"] - lr * g
        if self.nesterov:
            return p + (self.momentum * m - lr * g), {"momentum": m}
        return p + m, {"momentum": m}

    def get_config(self):
        return {**super().get_config(), "momentum": self.momentum, "nesterov": self.nesterov}


class Adam(Optimizer):
    def __init__(self, learning_rate=None, beta_1=0.9, beta_2=0.999, epsilon=1e-7, amsgrad=False, **kwargs):
        super().__init__(learning_rate, **kwargs)
        self.beta_1, self.beta_2, self.epsilon, self.amsgrad = beta_1, beta_2, epsilon, amsgrad
        self.slot_names = ("m", "v", "vhat") if amsgrad else ("m", "v")

    def _rescaled(self) -> bool:
        return self.beta_1 < 1.0 and self.beta_2 < 1.0

    def slot_scale(self, name) -> float:
        # the runtime keeps m / (1 - beta_1) and v / (1 - beta_2): then each moment's update
        # is one multiply and one add over the tensor (Keras's m + (g - m)(1 - beta_1) is
        # three passes), 10 passes per step instead of 12; the constants move into scalars
        if not self._rescaled():
            return 1.0
        return 1.0 / (1.0 - self.beta_1) if name == "m" else 1.0 / (1.0 - self.beta_2)

    def update(self, p, g, s, lr, t, gs):
        b1, b2 = self.beta_1, self.beta_2
        alpha = lr * ops.sqrt(1.0 - ops.pow(b2, t)) / (1.0 - ops.pow(b1, t))
        if not self._rescaled():
            m = s["m"] + (g - s["m"]) * (1.0 - b1)
            v = s["v"] + (g * g - s["v"]) * (1.0 - b2)
            out = {"m": m, "v": v}
            if self.amsgrad:
                v = out["vhat"] = ops.maximum(s["vhat"], v)
            return p - alpha * m / (ops.sqrt(v) + self.epsilon), out
        # with m = (1 - b1) M and v = (1 - b2) V:
        #   alpha m / (sqrt(v) + eps) = alpha' M / (sqrt(V) + eps'),
        #   alpha' = alpha (1 - b1) / sqrt(1 - b2),  eps' = eps / sqrt(1 - b2)
        m = s["m"] * b1 + g
        v = s["v"] * b2 + g * g
        out = {"m": m, "v": v}
        if self.amsgrad:
            v = out["vhat"] = ops.maximum(s["vhat"], v)
        root = float(np.sqrt(1.0 - b2))
        return p - (alpha * ((1.0 - b1) / root)) * m / (ops.sqrt(v) + self.epsilon / root), out

    def get_config(self):
        return {**super().get_config(), "beta_1": self.beta_1, "beta_2": self.beta_2,
                "epsilon": self.epsilon, "amsgrad": self.amsgrad}


class AdamW(Adam):
    def __init__(self, learning_rate=None, weight_decay=0.004, beta_1=0.9, beta_2=0.999, epsilon=1e-7,
                 amsgrad=False, **kwargs):
        super().__init__(learning_rate, beta_1, beta_2, epsilon, amsgrad, weight_decay=weight_decay, **kwargs)


class RMSprop(Optimizer):
    def __init__(self, learning_rate=None, rho=0.9, momentum=0.0, epsilon=1e-7, centered=False, **kwargs):
        super().__init__(learning_rate, **kwargs)
        self.rho, self.momentum, self.epsilon, self.centered = rho, momentum, epsilon, centered
        self.slot_names = ("velocity",) + (("momentum",) if momentum else ()) + (
            ("average_gradient",) if centered else ())

    def update(self, p, g, s, lr, t, gs):
        rho = self.rho
        v = rho * s["velocity"] + (1.0 - rho) * (g * g)
        out = {"velocity": v}
        denom = v
        if self.centered:
            ag = rho * s["average_gradient"] + (1.0 - rho) * g
            out["average_gradient"] = ag
            denom = v - ag * ag
        inc = lr * g / ops.sqrt(denom + self.epsilon)
        if self.momentum:
            m = self.momentum * s["momentum"] + inc
            out["momentum"] = m
            return p - m, out
        return p - inc, out

    def get_config(self):
        return {**super().get_config(), "rho": self.rho, "momentum": self.momentum,
                "epsilon": self.epsilon, "centered": self.centered}


class Adagrad(Optimizer):
    slot_names = ("accumulator",)

    def __init__(self, learning_rate=None, initial_accumulator_value=0.1, epsilon=1e-7, **kwargs):
        super().__init__(learning_rate, **kwargs)
        self.initial_accumulator_value, self.epsilon = initial_accumulator_value, epsilon

    def slot_initial(self, name, var_value):
        return np.full_like(var_value, self.initial_accumulator_value)

    def update(self, p, g, s, lr, t, gs):
        acc = s["accumulator"] + g * g
        return p - lr * g / ops.sqrt(acc + self.epsilon), {"accumulator": acc}

    def get_config(self):
        return {**super().get_config(), "initial_accumulator_value": self.initial_accumulator_value,
                "epsilon": self.epsilon}


class Adadelta(Optimizer):
    slot_names = ("accumulated_grad", "accumulated_delta_var")

    def __init__(self, learning_rate=None, rho=0.95, epsilon=1e-7, **kwargs):
        super().__init__(learning_rate, **kwargs)
        self.rho, self.epsilon = rho, epsilon

    def update(self, p, g, s, lr, t, gs):
        rho, eps = self.rho, self.epsilon
        ag = rho * s["accumulated_grad"] + (1.0 - rho) * (g * g)
        delta = -ops.sqrt(s["accumulated_delta_var"] + eps) / ops.sqrt(ag + eps) * g
        ad = rho * s["accumulated_delta_var"] + (1.0 - rho) * (delta * delta)
        return p + lr * delta, {"accumulated_grad": ag, "accumulated_delta_var": ad}

    def get_config(self):
        return {**super().get_config(), "rho": self.rho, "epsilon": self.epsilon}


class Adamax(Optimizer):
    slot_names = ("m", "u")

    def __init__(self, learning_rate=None, beta_1=0.9, beta_2=0.999, epsilon=1e-7, **kwargs):
        super().__init__(learning_rate, **kwargs)
        self.beta_1, self.beta_2, self.epsilon = beta_1, beta_2, epsilon

    def update(self, p, g, s, lr, t, gs):
        m = s["m"] + (g - s["m"]) * (1.0 - self.beta_1)
        u = ops.maximum(self.beta_2 * s["u"], ops.abs(g))
        step = lr / (1.0 - ops.pow(self.beta_1, t))
        return p - step * m / (u + self.epsilon), {"m": m, "u": u}

    def get_config(self):
        return {**super().get_config(), "beta_1": self.beta_1, "beta_2": self.beta_2, "epsilon": self.epsilon}


class Nadam(Optimizer):
    """Keras 3 Nadam: momentum schedule u_t = b1*(1 - 0.5*0.96^t) and its running product."""
    slot_names = ("m", "v")

    def __init__(self, learning_rate=None, beta_1=0.9, beta_2=0.999, epsilon=1e-7, **kwargs):
        super().__init__(learning_rate, **kwargs)
        self.beta_1, self.beta_2, self.epsilon = beta_1, beta_2, epsilon

    def global_slots(self):
        return {"u_product": np.ones((), np.float32)}

    def update_globals(self, gslots, t):
        u_t = self.beta_1 * (1.0 - 0.5 * ops.pow(0.96, t))
        return {"u_product": gslots["u_product"] * u_t}

    def update(self, p, g, s, lr, t, gs):
        b1, b2 = self.beta_1, self.beta_2
        u_t = b1 * (1.0 - 0.5 * ops.pow(0.96, t))
        u_t1 = b1 * (1.0 - 0.5 * ops.pow(0.96, t + 1.0))
        u_prod = gs["u_product"]
        u_prod1 = u_prod * u_t1
        m = s["m"] + (g - s["m"]) * (1.0 - b1)
        v = s["v"] + (g * g - s["v"]) * (1.0 - b2)
        m_hat = u_t1 * m / (1.0 - u_prod1) + (1.0 - u_t) * g / (1.0 - u_prod)
        v_hat = v / (1.0 - ops.pow(b2, t))
        return p - m_hat * lr / (ops.sqrt(v_hat) + self.epsilon), {"m": m, "v": v}

    def get_config(self):
        return {**super().get_config(), "beta_1": self.beta_1, "beta_2": self.beta_2, "epsilon": self.epsilon}


_BY_NAME = {"sgd": SGD, "adam": Adam, "adamw": AdamW, "rmsprop": RMSprop, "adagrad": Adagrad,
            "adadelta": Adadelta, "adamax": Adamax, "nadam": Nadam}


def get(identifier) -> Optimizer:
    if isinstance(identifier, Optimizer):
        return identifier
    if isinstance(identifier, str):
        cls = _BY_NAME.get(identifier.lower())
        if cls is None:
            raise ValueError(f"Could not interpret optimizer identifier: {identifier!r}. "
                             f"Known optimizers: {sorted(_BY_NAME)}")
        return cls()
    raise ValueError(f"Could not interpret optimizer identifier: {identifier!r}")
