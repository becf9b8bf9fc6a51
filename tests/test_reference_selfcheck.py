"""Checks of the NumPy Keras reference (tests/reference/keras_numpy.py) itself.

1. Small cases computed by hand (derivations in the comments).
2. The analytic loss gradients against central differences of the reference.
3. Only when real Keras can be imported (optional; e.g.
   ``pip install keras torch==2.13.0``, backend torch by default here):
   every optimizer (5 steps on a small random problem), every loss (value and
   gradient), every metric and regularizer against Keras itself, in float64.

Run: ``python -m pytest tests/test_reference_selfcheck.py -q``
(``-rP`` also prints the measured max |differences| against Keras).
"""

import importlib.util
import math
import os

import numpy as np
import pytest

try:
    from tests.reference import keras_numpy as kn
except ImportError:  # tests/ itself on sys.path (pytest rootdir-less import)
    from reference import keras_numpy as kn

# --- optional real Keras ---------------------------------------------------
_KERAS_SKIP = "real Keras not installed (optional cross-check)"
if ("KERAS_BACKEND" not in os.environ and importlib.util.find_spec("keras")
        and importlib.util.find_spec("torch")):
    # Keras 3 defaults to TensorFlow; torch is the backend this project pins.
    os.environ["KERAS_BACKEND"] = "torch"
try:
    import keras  # noqa: E402
    HAVE_KERAS = True
except Exception:  # not installed, or no usable backend
    keras = None
    HAVE_KERAS = False

needs_keras = pytest.mark.skipif(not HAVE_KERAS, reason=_KERAS_SKIP)


def close(a, b, tol=1e-12):
    return np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))) <= tol


# ============================================================================
# 1. Hand-computed cases
# ============================================================================

# ---- optimizers: one parameter p = 1.0, gradient g = 0.5 -----------------

def _one_step(opt, g=0.5, p=1.0):
    return float(opt.step([np.array([p])], [np.array([g])])[0][0])


def test_sgd_by_hand():
    # plain: p = 1 - 0.1 * 0.5 = 0.95
    assert _one_step(kn.SGD(learning_rate=0.1)) == pytest.approx(0.95, abs=1e-15)
    # momentum 0.9: m1 = -0.05, p1 = 0.95; m2 = 0.9*-0.05 - 0.05 = -0.095, p2 = 0.855
    o = kn.SGD(learning_rate=0.1, momentum=0.9)
    p = o.step([np.array([1.0])], [np.array([0.5])])
    p = o.step(p, [np.array([0.5])])
    assert float(p[0][0]) == pytest.approx(0.855, abs=1e-15)
    # nesterov: m1 = -0.05; p1 = 1 + 0.9*(-0.05) - 0.05 = 0.905
    o = kn.SGD(learning_rate=0.1, momentum=0.9, nesterov=True)
    assert _one_step(o) == pytest.approx(0.905, abs=1e-15)
    assert kn.SGD().learning_rate == 0.01


def test_adam_by_hand():
    # t=1: m = 0.05, v = 0.00025, alpha = lr*sqrt(0.001)/0.1
    #   p -= lr * sqrt(.001)*0.5 / (sqrt(.001)*0.5 + 1e-7)
    #      = 1 - 0.001*0.0158113883 / 0.0158114883 = 0.9990000063245154
    o = kn.Adam()
    p = o.step([np.array([1.0])], [np.array([0.5])])
    assert float(p[0][0]) == pytest.approx(0.9990000063245154, abs=1e-15)
    # t=2 (g = 0.5 again): m = 0.095, v = 0.00049975,
    #   alpha = 0.001*sqrt(1-0.999^2)/(1-0.9^2); p = 0.9980000107977498
    p = o.step(p, [np.array([0.5])])
    assert float(p[0][0]) == pytest.approx(0.9980000107977498, abs=1e-15)
    assert o.iterations == 2


def test_adamw_by_hand():
    # decay first: 1 * (1 - 0.004 * 0.001) = 0.999996, then the Adam step above
    # (which does not depend on p): 0.999996 - 0.0009999936754846 = 0.9989960063245154
    assert _one_step(kn.AdamW()) == pytest.approx(0.9989960063245154, abs=1e-15)


def test_rmsprop_by_hand():
    # v = 0.1 * 0.25 = 0.025; p = 1 - 0.01*0.5/sqrt(0.025 + 1e-7) = 0.9683772866436797
    assert _one_step(kn.RMSprop(learning_rate=0.01)) == pytest.approx(
        0.9683772866436797, abs=1e-15)
    # centered: a = 0.05, denom = 0.025 - 0.0025 + 1e-7 -> 0.9666667407404939
    assert _one_step(kn.RMSprop(learning_rate=0.01, centered=True)) == pytest.approx(
        0.9666667407404939, abs=1e-15)


def test_adagrad_by_hand():
    # acc = 0.1 + 0.25 = 0.35; p = 1 - 0.1*0.5/sqrt(0.35 + 1e-7) = 0.9154845866007779
    assert _one_step(kn.Adagrad(learning_rate=0.1)) == pytest.approx(
        0.9154845866007779, abs=1e-15)


def test_adadelta_by_hand():
    # Eg = 0.05*0.25 = 0.0125; d = -sqrt(0 + 1e-7)*0.5/sqrt(0.0125 + 1e-7)
    # p = 1 + 1.0 * d = 0.9985857920944472
    assert _one_step(kn.Adadelta(learning_rate=1.0)) == pytest.approx(
        0.9985857920944472, abs=1e-15)


def test_adamax_by_hand():
    # m = 0.05, u = 0.5; p = 1 - 0.001*0.05/((1-0.9)*(0.5+1e-7)) = 0.9990000001999999
    assert _one_step(kn.Adamax()) == pytest.approx(0.9990000001999999, abs=1e-15)


def test_nadam_by_hand():
    # u1 = 0.9*(1-0.5*0.96) = 0.468, u2 = 0.9*(1-0.5*0.96^2) = 0.48528
    # prod1 = 0.468, prod2 = 0.468*0.48528 = 0.22711104
    # m_hat = 0.48528*0.05/(1-0.22711104) + (1-0.468)*0.5/(1-0.468) = 0.5313939016543852
    # v_hat = 0.00025/0.001 = 0.25; p = 1 - 0.001*m_hat/(0.5 + 1e-7) = 0.9989372124092487
    assert _one_step(kn.Nadam()) == pytest.approx(0.9989372124092487, abs=1e-15)


def test_clipping_by_hand():
    # clipnorm=1, g = [3, 4] (norm 5) -> [0.6, 0.8]; SGD lr=1: p = 0 - g
    o = kn.SGD(learning_rate=1.0, clipnorm=1.0)
    p = o.step([np.zeros(2)], [np.array([3.0, 4.0])])
    assert close(p[0], [-0.6, -0.8])
    # clipnorm acts per tensor: [3] and [4] -> [1] and [1]
    o = kn.SGD(learning_rate=1.0, clipnorm=1.0)
    p = o.step([np.zeros(1), np.zeros(1)], [np.array([3.0]), np.array([4.0])])
    assert close(p[0], [-1.0]) and close(p[1], [-1.0])
    # global_clipnorm=1 over [3] and [4] (global norm 5) -> [0.6] and [0.8]
    o = kn.SGD(learning_rate=1.0, global_clipnorm=1.0)
    p = o.step([np.zeros(1), np.zeros(1)], [np.array([3.0]), np.array([4.0])])
    assert close(p[0], [-0.6]) and close(p[1], [-0.8])
    # a norm below the clip is untouched
    o = kn.SGD(learning_rate=1.0, global_clipnorm=10.0)
    p = o.step([np.zeros(2)], [np.array([3.0, 4.0])])
    assert close(p[0], [-3.0, -4.0])
    # clipvalue=0.5: [3, -4, 0.1] -> [0.5, -0.5, 0.1]
    o = kn.SGD(learning_rate=1.0, clipvalue=0.5)
    p = o.step([np.zeros(3)], [np.array([3.0, -4.0, 0.1])])
    assert close(p[0], [-0.5, 0.5, -0.1])
    with pytest.raises(ValueError):
        kn.SGD(clipnorm=1.0, clipvalue=1.0)


def test_weight_decay_by_hand():
    # generic weight_decay on SGD: p = 2 - 2*0.1*0.5 = 1.9, then - 0.5*1 = 1.4
    o = kn.SGD(learning_rate=0.5, weight_decay=0.1)
    assert _one_step(o, g=1.0, p=2.0) == pytest.approx(1.4, abs=1e-15)
    # decay uses the pre-step (clipped-gradient-independent) parameter value
    o = kn.SGD(learning_rate=0.5, weight_decay=0.1, clipvalue=0.1)
    assert _one_step(o, g=1.0, p=2.0) == pytest.approx(1.9 - 0.05, abs=1e-15)


def test_learning_rate_schedule_callable():
    # lr(iterations): 0.1 at step 0, 0.2 at step 1 -> 1 - 0.1 - 0.2 = 0.7 (g = 1)
    o = kn.SGD(learning_rate=lambda it: 0.1 * (it + 1))
    p = o.step([np.array([1.0])], [np.array([1.0])])
    p = o.step(p, [np.array([1.0])])
    assert float(p[0][0]) == pytest.approx(0.7, abs=1e-15)


def test_optimizer_defaults():
    a = kn.Adam()
    assert (a.learning_rate, a.beta_1, a.beta_2, a.epsilon, a.amsgrad) == (
        0.001, 0.9, 0.999, 1e-7, False)
    assert kn.AdamW().weight_decay == 0.004
    r = kn.RMSprop()
    assert (r.learning_rate, r.rho, r.momentum, r.epsilon, r.centered) == (
        0.001, 0.9, 0.0, 1e-7, False)
    g = kn.Adagrad()
    assert (g.learning_rate, g.initial_accumulator_value, g.epsilon) == (0.001, 0.1, 1e-7)
    d = kn.Adadelta()
    assert (d.learning_rate, d.rho, d.epsilon) == (0.001, 0.95, 1e-7)
    for cls in (kn.Adamax, kn.Nadam):
        o = cls()
        assert (o.learning_rate, o.beta_1, o.beta_2, o.epsilon) == (0.001, 0.9, 0.999, 1e-7)
    s = kn.SGD()
    assert (s.learning_rate, s.momentum, s.nesterov) == (0.01, 0.0, False)


def test_step_does_not_modify_inputs():
    p0 = [np.array([1.0, 2.0])]
    g0 = [np.array([0.5, 0.5])]
    kn.Adam().step(p0, g0)
    assert close(p0[0], [1.0, 2.0]) and close(g0[0], [0.5, 0.5])


# ---- losses ---------------------------------------------------------------

def test_crossentropy_by_hand():
    # probabilities renormalised: [0.1, 0.3, 0.1] / 0.5 = [0.2, 0.6, 0.2] -> -log 0.6
    assert kn.loss("categorical_crossentropy", [[0, 1, 0]], [[0.1, 0.3, 0.1]]) == \
        pytest.approx(0.5108256237659907, abs=1e-14)
    # clipping at eps = 1e-7: -log(1e-7) = 16.11809565095832
    assert kn.loss("categorical_crossentropy", [[1, 0, 0]], [[0.0, 1.0, 0.0]]) == \
        pytest.approx(16.11809565095832, abs=1e-12)
    # logits [0, 0, ln 2] -> softmax [1/4, 1/4, 1/2] -> -log(1/2)
    assert kn.loss("categorical_crossentropy", [[0, 0, 1]], [[0, 0, math.log(2)]],
                   from_logits=True) == pytest.approx(math.log(2), abs=1e-14)
    # label smoothing 0.3 over 3 classes: y = [0.1, 0.8, 0.1] on p = [0.2, 0.6, 0.2]
    exp = -(0.1 * math.log(0.2) + 0.8 * math.log(0.6) + 0.1 * math.log(0.2))
    assert kn.loss("categorical_crossentropy", [[0, 1, 0]], [[0.2, 0.6, 0.2]],
                   label_smoothing=0.3) == pytest.approx(exp, abs=1e-14)
    # sparse: labels (B,) or (B, 1); mean of -log 0.6 and -log 0.5
    exp = (0.5108256237659907 + 0.6931471805599453) / 2
    for yt in ([1, 0], [[1], [0]]):
        assert kn.loss("sparse_categorical_crossentropy", yt,
                       [[0.2, 0.6, 0.2], [0.5, 0.25, 0.25]]) == pytest.approx(exp, abs=1e-14)
    # binary: y = [1, 0], p = [0.8, 0.8] -> (-log 0.8 - log 0.2) / 2
    assert kn.loss("binary_crossentropy", [[1, 0]], [[0.8, 0.8]]) == \
        pytest.approx(0.916290731874155, abs=1e-14)
    # binary clipping: p = 1 with y = 0 -> -log(1 - (1 - 1e-7)) ~= 16.118095
    assert kn.loss("binary_crossentropy", [[0.0]], [[1.0]]) == pytest.approx(
        16.11809565095832, rel=1e-8)
    # binary logits: z = 0 -> log 2 for any label
    assert kn.loss("binary_crossentropy", [[1.0, 0.0]], [[0.0, 0.0]],
                   from_logits=True) == pytest.approx(math.log(2), abs=1e-15)


def test_regression_losses_by_hand():
    yt, yp = [[1.0, 2.0]], [[2.0, 4.0]]
    assert kn.loss("mse", yt, yp) == pytest.approx(2.5)            # (1 + 4) / 2
    assert kn.loss("mae", yt, yp) == pytest.approx(1.5)            # (1 + 2) / 2
    assert kn.loss("mape", yt, yp) == pytest.approx(100.0)         # 100*(1/1 + 2/2)/2
    # ((log 3 - log 2)^2 + (log 5 - log 3)^2) / 2
    assert kn.loss("msle", yt, yp) == pytest.approx(0.2126723858945394, abs=1e-15)
    # errors 1 and 2, delta 1: 0.5*1^2 = 0.5 and 1*2 - 0.5 = 1.5 -> 1.0
    assert kn.loss("huber", yt, yp) == pytest.approx(1.0)
    # (log cosh 1 + log cosh 2) / 2
    assert kn.loss("log_cosh", yt, yp) == pytest.approx(0.8793917889204458, abs=1e-14)
    # rank-1 y_true against (B, 1) y_pred is expanded: per-sample (1, 4) -> 2.5
    assert kn.loss("mse", [1.0, 2.0], [[2.0], [4.0]]) == pytest.approx(2.5)


def test_other_losses_by_hand():
    # hinge: labels {0,1} -> {-1,1}: max(1 + 0.3, 0) = 1.3, max(1 - 0.4, 0) = 0.6
    assert kn.loss("hinge", [[0, 1]], [[0.3, 0.4]]) == pytest.approx(0.95)
    assert kn.loss("squared_hinge", [[0, 1]], [[0.3, 0.4]]) == pytest.approx(1.025)
    # labels already -1/1 are used as they are
    assert kn.loss("hinge", [[-1, 1]], [[0.3, 0.4]]) == pytest.approx(0.95)
    # categorical hinge: pos = 0.5, neg = max(0.2, 0, 0.3) = 0.3 -> 0.3 - 0.5 + 1
    assert kn.loss("categorical_hinge", [[0, 1, 0]], [[0.2, 0.5, 0.3]]) == pytest.approx(0.8)
    # KL: 0.5 log(0.5/0.25) + 0.5 log(0.5/0.75)
    assert kn.loss("kl_divergence", [[0.5, 0.5]], [[0.25, 0.75]]) == \
        pytest.approx(0.14384103622589042, abs=1e-15)
    # poisson: ((1 - log(1+eps)) + (2 - 2 log(2+eps))) / 2
    assert kn.loss("poisson", [[1.0, 2.0]], [[1.0, 2.0]]) == \
        pytest.approx(0.8068527194400585, abs=1e-14)
    # cosine: -(1, 0).(1, 1)/sqrt 2
    assert kn.loss("cosine_similarity", [[1.0, 0.0]], [[1.0, 1.0]]) == \
        pytest.approx(-1 / math.sqrt(2), abs=1e-15)


def test_sample_weight_semantics_by_hand():
    # per-sample MSE [1, 4]; weights [1, 0] -> (1*1 + 0*4) / 2 samples = 0.5
    yt, yp = [[0.0], [0.0]], [[1.0], [2.0]]
    assert kn.loss("mse", yt, yp, sample_weight=[1.0, 0.0]) == pytest.approx(0.5)
    assert kn.loss("mse", yt, yp, sample_weight=[[2.0], [1.0]]) == pytest.approx(3.0)
    assert kn.loss("mse", yt, yp, sample_weight=[1.0, 0.0],
                   reduction="sum") == pytest.approx(1.0)
    assert kn.loss("mse", yt, yp, sample_weight=[1.0, 3.0],
                   reduction="mean_with_sample_weight") == pytest.approx(13 / 4)
    # a metric (keras.metrics.Mean) divides by the weight sum instead: 1 / 1
    assert kn.metric("mse", yt, yp, sample_weight=[1.0, 0.0]) == pytest.approx(1.0)


def test_loss_gradients_by_hand():
    # MSE: d/dp mean_b mean_k (p - y)^2 = 2 (p - y) / (K B): B = 1, K = 2
    assert close(kn.loss_grad("mse", [[1.0, 2.0]], [[2.0, 4.0]]), [[1.0, 2.0]])
    # CCE from logits: (softmax(z) - y) / B with softmax([0,0,ln2]) = [1/4,1/4,1/2]
    assert close(kn.loss_grad("categorical_crossentropy", [[0, 0, 1]],
                              [[0, 0, math.log(2)]], from_logits=True),
                 [[0.25, 0.25, -0.5]])
    # BCE logits: (sigmoid(0) - y) / K = [-0.25, 0.25]
    assert close(kn.loss_grad("binary_crossentropy", [[1.0, 0.0]], [[0.0, 0.0]],
                              from_logits=True), [[-0.25, 0.25]])
    # CCE probabilities, normalised p = y_pred: dl/dy_k = (-y_k/p_k + 1) / sum(y_pred)
    # y = [0,1,0], p = [0.2,0.6,0.2], sum 1: [1, 1 - 1/0.6, 1]
    assert close(kn.loss_grad("categorical_crossentropy", [[0, 1, 0]], [[0.2, 0.6, 0.2]]),
                 [[1.0, 1.0 - 1 / 0.6, 1.0]])
    # weights scale each sample's gradient by w / B
    assert close(kn.loss_grad("mse", [[0.0], [0.0]], [[1.0], [2.0]], sample_weight=[1.0, 0.0]),
                 [[1.0], [0.0]])


# ---- metrics --------------------------------------------------------------

def test_accuracy_metrics_by_hand():
    yt = [1, 0, 1, 0]
    yp = [0.6, 0.4, 0.5, 0.7]       # > 0.5 strictly: [1, 0, 0, 1]
    assert kn.metric("binary_accuracy", yt, yp) == pytest.approx(0.5)
    yt_c = [[0, 1, 0], [1, 0, 0]]
    yp_c = [[0.1, 0.7, 0.2], [0.3, 0.4, 0.3]]
    assert kn.metric("categorical_accuracy", yt_c, yp_c) == pytest.approx(0.5)
    assert kn.metric("sparse_categorical_accuracy", [1, 0], yp_c) == pytest.approx(0.5)
    assert kn.metric("sparse_categorical_accuracy", [[1], [0]], yp_c) == pytest.approx(0.5)
    # top-2: row 2's true class 0 (0.3) ties the 2nd largest 0.3 -> counted
    assert kn.metric("top_k_categorical_accuracy", yt_c, yp_c, k=2) == pytest.approx(1.0)
    assert kn.metric("top_k_categorical_accuracy", yt_c, yp_c, k=1) == pytest.approx(0.5)
    assert kn.metric("sparse_top_k_categorical_accuracy", [1, 2], yp_c, k=1) == \
        pytest.approx(0.5)
    # weighted: matches [1, 0] with weights [1, 3] -> 1/4
    assert kn.metric("categorical_accuracy", yt_c, yp_c, sample_weight=[1, 3]) == \
        pytest.approx(0.25)


def test_regression_metrics_by_hand():
    yt, yp = [[1.0, 2.0]], [[2.0, 4.0]]
    assert kn.metric("mse", yt, yp) == pytest.approx(2.5)
    assert kn.metric("mae", yt, yp) == pytest.approx(1.5)
    assert kn.root_mean_squared_error(yt, yp) == pytest.approx(math.sqrt(2.5))


def test_precision_recall_by_hand():
    yt = [1, 0, 1, 0]
    yp = [0.6, 0.4, 0.5, 0.7]       # predicted positive: idx 0, 3
    # tp = 1 (idx 0), fp = 1 (idx 3), fn = 1 (idx 2, 0.5 is not > 0.5)
    assert kn.precision(yt, yp) == pytest.approx(0.5)
    assert kn.recall(yt, yp) == pytest.approx(0.5)
    # weights [2, 1, 1, 1]: tp = 2, fp = 1 -> 2/3;  fn = 1 -> 2/3
    assert kn.precision(yt, yp, sample_weight=[2, 1, 1, 1]) == pytest.approx(2 / 3)
    assert kn.recall(yt, yp, sample_weight=[2, 1, 1, 1]) == pytest.approx(2 / 3)
    assert kn.precision([0, 0], [0.1, 0.2]) == 0.0     # no positives: divide_no_nan


def test_auc_by_hand():
    # 4 pairs (pos, neg): (0.35 > 0.1) yes, (0.35 > 0.4) no, 0.8 beats both -> 3/4;
    # 0.35 and 0.4 fall in different buckets of the 200-threshold grid, so the
    # trapezoid sum over the step ROC curve is exact.
    assert kn.auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75, abs=1e-12)
    assert kn.auc([0, 1], [0.2, 0.9]) == pytest.approx(1.0, abs=1e-12)
    # equal scores: the ROC curve is the diagonal -> 0.5
    assert kn.auc([0, 1], [0.3, 0.3]) == pytest.approx(0.5, abs=1e-12)
    # threshold layout: p = 0.5 -> bucket ceil(0.5*199) - 1 = 99: positive at
    # thresholds 0..99 (99/199 < 0.5 < 100/199)
    tp, fp, tn, fn = kn.auc_confusion_variables([1], [0.5])
    assert tp[99] == 1 and tp[100] == 0 and tp[0] == 1 and fn[100] == 1
    # p = 0 still counts as positive at the first threshold (-eps), p = 1 not at 1+eps
    tp, *_ = kn.auc_confusion_variables([1, 1], [0.0, 1.0])
    assert tp[0] == 2 and tp[1] == 1 and tp[198] == 1 and tp[199] == 0


# ---- regularizers --------------------------------------------------------

def test_regularizers_by_hand():
    w = np.array([1.0, -2.0])
    assert kn.l1(w) == pytest.approx(0.03)                  # 0.01 * (1 + 2)
    assert kn.l2(w) == pytest.approx(0.05)                  # 0.01 * (1 + 4)
    assert kn.l1_l2(w) == 0.0                               # Keras 3 defaults 0, 0
    assert kn.l1_l2(w, l1=0.1, l2=0.2) == pytest.approx(1.3)
    assert close(kn.regularizer_grad("l2", w), [0.02, -0.04])
    assert close(kn.regularizer_grad("l1", w), [0.01, -0.01])


# ============================================================================
# 2. Analytic loss gradients vs central differences of the reference
# ============================================================================

def _loss_cases(rng, B=5, K=4):
    """(name, y_true, y_pred, kwargs) away from kinks and clip boundaries."""
    onehot = np.eye(K)[rng.integers(0, K, B)]
    labels = rng.integers(0, K, B)
    probs_unnorm = rng.uniform(0.1, 1.0, (B, K))
    bin_true = rng.integers(0, 2, (B, K)).astype(float)
    reg_t = rng.normal(size=(B, K))
    reg_p = rng.normal(size=(B, K))
    soft = kn.softmax(rng.normal(size=(B, K)))
    cases = [
        ("categorical_crossentropy", onehot, probs_unnorm, {}),
        ("categorical_crossentropy", onehot, probs_unnorm, {"label_smoothing": 0.1}),
        ("categorical_crossentropy", onehot, 3 * reg_p, {"from_logits": True}),
        ("categorical_crossentropy", soft, 3 * reg_p,
         {"from_logits": True, "label_smoothing": 0.2}),
        ("sparse_categorical_crossentropy", labels, probs_unnorm, {}),
        ("sparse_categorical_crossentropy", labels[:, None], 3 * reg_p, {"from_logits": True}),
        ("binary_crossentropy", bin_true, rng.uniform(0.05, 0.95, (B, K)), {}),
        ("binary_crossentropy", bin_true, rng.uniform(0.05, 0.95, (B, K)),
         {"label_smoothing": 0.1}),
        ("binary_crossentropy", bin_true, 3 * reg_p, {"from_logits": True}),
        ("mean_squared_error", reg_t, reg_p, {}),
        ("mean_absolute_error", reg_t, reg_p, {}),
        ("mean_absolute_percentage_error", reg_t, reg_p, {}),
        ("mean_squared_logarithmic_error", np.abs(reg_t), reg_p, {}),
        ("huber", reg_t, 2 * reg_p, {}),
        ("huber", reg_t, 2 * reg_p, {"delta": 0.5}),
        ("log_cosh", reg_t, reg_p, {}),
        ("hinge", bin_true, reg_p, {}),
        ("hinge", 2 * bin_true - 1, reg_p, {}),
        ("squared_hinge", bin_true, reg_p, {}),
        ("categorical_hinge", onehot, reg_p, {}),
        ("kl_divergence", soft, kn.softmax(reg_p), {}),
        ("poisson", rng.poisson(2.0, (B, K)).astype(float), rng.uniform(0.5, 3.0, (B, K)), {}),
        ("cosine_similarity", reg_t, reg_p, {}),
    ]
    return cases


@pytest.mark.parametrize("weighted", [False, True])
def test_analytic_grads_match_numeric(weighted):
    rng = np.random.default_rng(0)
    sw = rng.uniform(0.0, 2.0, 5) if weighted else None
    for name, yt, yp, kw in _loss_cases(rng):
        ana = kn.loss_grad(name, yt, yp, sample_weight=sw, **kw)
        num = kn.numeric_grad(lambda x: kn.loss(name, yt, x, sample_weight=sw, **kw), yp)
        assert ana.shape == np.shape(yp)
        assert np.max(np.abs(ana - num)) < 1e-6 * max(1.0, np.max(np.abs(num))), (name, kw)


# ============================================================================
# 3. Cross-check against real Keras (optional)
# ============================================================================

@pytest.fixture
def float64_keras():
    prev = keras.config.floatx()
    keras.config.set_floatx("float64")
    try:
        yield
    finally:
        keras.config.set_floatx(prev)


def _report(kind, name, diff):
    print(f"[keras-xcheck] {kind:10s} {name:60s} max|diff| = {diff:.3e}")


# ---- optimizers -------------------------------------------------------------

_OPT_CASES = [
    ("SGD", {}),
    ("SGD", {"learning_rate": 0.1, "momentum": 0.9}),
    ("SGD", {"learning_rate": 0.1, "momentum": 0.9, "nesterov": True}),
    ("SGD", {"learning_rate": 0.1, "clipnorm": 0.5}),
    ("SGD", {"learning_rate": 0.1, "global_clipnorm": 0.5}),
    ("SGD", {"learning_rate": 0.1, "clipvalue": 0.05}),
    ("SGD", {"learning_rate": 0.1, "weight_decay": 0.05}),
    ("Adam", {}),
    ("Adam", {"learning_rate": 0.05, "beta_1": 0.8, "beta_2": 0.95, "epsilon": 1e-4}),
    ("Adam", {"learning_rate": 0.05, "amsgrad": True}),
    ("Adam", {"learning_rate": 0.05, "clipnorm": 0.3}),
    ("Adam", {"learning_rate": 0.05, "weight_decay": 0.1}),
    ("AdamW", {}),
    ("AdamW", {"learning_rate": 0.05, "weight_decay": 0.1, "amsgrad": True}),
    ("AdamW", {"learning_rate": 0.05, "weight_decay": 0.1, "global_clipnorm": 0.3}),
    ("RMSprop", {}),
    ("RMSprop", {"learning_rate": 0.01, "rho": 0.8, "momentum": 0.5}),
    ("RMSprop", {"learning_rate": 0.01, "centered": True}),
    ("RMSprop", {"learning_rate": 0.01, "centered": True, "momentum": 0.3,
                 "clipvalue": 0.2}),
    ("Adagrad", {}),
    ("Adagrad", {"learning_rate": 0.3, "initial_accumulator_value": 0.5, "epsilon": 1e-3}),
    ("Adadelta", {}),
    ("Adadelta", {"learning_rate": 1.0, "rho": 0.8, "epsilon": 1e-4}),
    ("Adamax", {}),
    ("Adamax", {"learning_rate": 0.05, "beta_1": 0.7, "beta_2": 0.9}),
    ("Nadam", {}),
    ("Nadam", {"learning_rate": 0.05, "beta_1": 0.8, "beta_2": 0.95, "weight_decay": 0.1}),
]


def _problem(seed=0):
    """Linear regression y = x W + b with MSE; grads are a function of params."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(8, 3))
    y = rng.normal(size=(8, 2))
    params0 = [rng.normal(size=(3, 2)), rng.normal(size=(2,))]

    def grads(params):
        W, b = params
        pred = x @ W + b
        d = kn.loss_grad("mse", y, pred)
        return [x.T @ d, d.sum(0)]

    return params0, grads


def _run_keras_opt(cls_name, kwargs, params0, grads_fn, steps, dtype):
    opt = getattr(keras.optimizers, cls_name)(**kwargs)
    vars_ = [keras.Variable(p.astype(dtype), dtype=dtype) for p in params0]
    history = []
    for _ in range(steps):
        cur = [np.asarray(keras.ops.convert_to_numpy(v), np.float64) for v in vars_]
        g = grads_fn(cur)
        opt.apply([keras.ops.convert_to_tensor(gi.astype(dtype), dtype=dtype) for gi in g],
                  vars_)
        history.append([np.asarray(keras.ops.convert_to_numpy(v), np.float64) for v in vars_])
    return history


def _run_ref_opt(cls_name, kwargs, params0, grads_fn, steps, dtype):
    opt = getattr(kn, cls_name)(dtype=dtype, **kwargs)
    p = [q.astype(dtype) for q in params0]
    history = []
    for _ in range(steps):
        g = grads_fn([q.astype(np.float64) for q in p])
        p = opt.step(p, [gi.astype(dtype) for gi in g])
        history.append([q.astype(np.float64) for q in p])
    return history


@needs_keras
@pytest.mark.parametrize("cls_name,kwargs", _OPT_CASES,
                         ids=[f"{c}-{i}" for i, (c, _) in enumerate(_OPT_CASES)])
def test_optimizer_vs_keras_float64(cls_name, kwargs, float64_keras):
    params0, grads_fn = _problem()
    hk = _run_keras_opt(cls_name, kwargs, params0, grads_fn, 5, "float64")
    hr = _run_ref_opt(cls_name, kwargs, params0, grads_fn, 5, np.float64)
    diff = max(np.max(np.abs(a - b)) for sk, sr in zip(hk, hr) for a, b in zip(sk, sr))
    # the updates themselves must be large compared with the tolerance
    moved = min(np.max(np.abs(a - b)) for a, b in zip(hr[-1], params0))
    _report("optimizer", f"{cls_name} {kwargs} (moved {moved:.1e})", diff)
    if kwargs:  # non-default cases use step sizes that make any error visible
        assert moved > 1e-2
    # The torch backend's fused optimizers are float64-exact, but Keras's
    # clipnorm / global_clipnorm use ops.maximum / ops.minimum with a Python
    # scalar, which Keras's dtype promotion computes in float32 off TF.
    # On TF the generic optimizer code casts Python hyperparameters through
    # float32 tensors (beta_2 = 0.999 becomes 0.99900001287), so TF agrees
    # only to ~2e-6 here.
    norm_clip = "clipnorm" in kwargs or "global_clipnorm" in kwargs
    if keras.backend.backend() == "tensorflow":
        tol = 1e-5
    elif norm_clip:
        tol = 1e-6
    else:
        tol = 1e-12
    assert diff < tol


@needs_keras
@pytest.mark.parametrize("cls_name", ["SGD", "Adam", "AdamW", "RMSprop", "Adagrad",
                                      "Adadelta", "Adamax", "Nadam"])
def test_optimizer_defaults_vs_keras_float32(cls_name):
    # Keras at its default floatx float32 vs the reference in float32.
    params0, grads_fn = _problem(1)
    hk = _run_keras_opt(cls_name, {}, params0, grads_fn, 5, "float32")
    hr = _run_ref_opt(cls_name, {}, params0, grads_fn, 5, np.float32)
    diff = max(np.max(np.abs(a - b)) for sk, sr in zip(hk, hr) for a, b in zip(sk, sr))
    _report("opt-f32", cls_name, diff)
    assert diff < 1e-6


@needs_keras
def test_optimizer_keras_defaults_match():
    for name in ["SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "Adadelta", "Adamax", "Nadam"]:
        kcfg = getattr(keras.optimizers, name)().get_config()
        ref = getattr(kn, name)()
        for key in ("beta_1", "beta_2", "epsilon", "amsgrad", "rho", "momentum",
                    "centered", "initial_accumulator_value", "nesterov", "weight_decay"):
            if key in kcfg:
                assert getattr(ref, key) == kcfg[key], (name, key)
        assert ref.learning_rate == pytest.approx(kcfg["learning_rate"], rel=1e-7), name


# ---- losses -----------------------------------------------------------------

_KERAS_LOSS_CLASS = {
    "categorical_crossentropy": "CategoricalCrossentropy",
    "sparse_categorical_crossentropy": "SparseCategoricalCrossentropy",
    "binary_crossentropy": "BinaryCrossentropy",
    "mean_squared_error": "MeanSquaredError",
    "mean_absolute_error": "MeanAbsoluteError",
    "mean_absolute_percentage_error": "MeanAbsolutePercentageError",
    "mean_squared_logarithmic_error": "MeanSquaredLogarithmicError",
    "huber": "Huber",
    "log_cosh": "LogCosh",
    "hinge": "Hinge",
    "squared_hinge": "SquaredHinge",
    "categorical_hinge": "CategoricalHinge",
    "kl_divergence": "KLDivergence",
    "poisson": "Poisson",
    "cosine_similarity": "CosineSimilarity",
}


def _xcheck_loss_cases():
    rng = np.random.default_rng(42)
    cases = _loss_cases(rng, B=6, K=5)
    # clip boundaries: zero probabilities and exact 0/1 predictions
    p = rng.uniform(0.1, 1.0, (6, 5))
    p[0, :] = [0.0, 1.0, 0.0, 0.0, 0.0]
    yt = np.eye(5)[[0, 1, 2, 3, 4, 0]]
    cases.append(("categorical_crossentropy", yt, p, {}))
    pb = rng.uniform(0.05, 0.95, (6, 5))
    pb[0, :2] = [0.0, 1.0]
    cases.append(("binary_crossentropy", rng.integers(0, 2, (6, 5)).astype(float), pb, {}))
    # rank alignment: y_true (B,) vs y_pred (B, 1)
    cases.append(("mean_squared_error", rng.normal(size=6), rng.normal(size=(6, 1)), {}))
    cases.append(("binary_crossentropy", rng.integers(0, 2, 6).astype(float),
                  rng.uniform(0.05, 0.95, (6, 1)), {}))
    return cases


def _keras_loss_value_and_grad(name, yt, yp, sw, kw, reduction):
    """Keras loss value and d value / d y_pred (torch autograd, else numeric)."""
    lobj = getattr(keras.losses, _KERAS_LOSS_CLASS[name])(
        dtype="float64", reduction=reduction, **kw)
    if keras.backend.backend() == "torch":
        import torch
        x = torch.tensor(np.asarray(yp, np.float64), requires_grad=True)
        args = {}
        if sw is not None:
            args["sample_weight"] = torch.tensor(np.asarray(sw, np.float64))
        val = lobj(torch.tensor(np.asarray(yt, np.float64)), x, **args)
        val.sum().backward()
        return val.detach().numpy().astype(np.float64), x.grad.numpy().copy()
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf
        x = tf.Variable(np.asarray(yp, np.float64))
        with tf.GradientTape() as tape:
            val = lobj(tf.constant(np.asarray(yt, np.float64)), x,
                       sample_weight=None if sw is None else tf.constant(sw))
            total = tf.reduce_sum(val)
        g = tape.gradient(total, x)
        return np.asarray(val.numpy(), np.float64), np.asarray(g.numpy(), np.float64)

    def f(x):
        v = keras.ops.convert_to_numpy(lobj(yt, x, sample_weight=sw))
        return float(np.sum(v))

    v = np.asarray(keras.ops.convert_to_numpy(lobj(yt, yp, sample_weight=sw)), np.float64)
    return v, kn.numeric_grad(f, yp)


def _rel(a, b):
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(1.0, float(np.max(np.abs(a)))))


def _tol():
    """Relative tolerance for float64 Keras results.

    Off the TensorFlow backend Keras's dtype promotion maps float64 to float32
    (keras/src/backend/common/dtypes.py: BIT64_TO_BIT32_DTYPE, "to be aligned
    with JAX"), so ops such as ops.mean, ops.divide_no_nan and
    ops.maximum(x, python_float) compute in float32 even for float64 inputs:
    those results only agree to float32 precision.  On TF they stay float64.
    On TF a few Python constants still pass through float32 tensors (e.g.
    log(2) in log_cosh: ~2e-9), hence 1e-8 there.
    """
    return 1e-8 if keras.backend.backend() == "tensorflow" else 1e-6


@needs_keras
@pytest.mark.parametrize("weighted", [False, True])
def test_losses_vs_keras(weighted, float64_keras):
    rng = np.random.default_rng(7)
    seen = set()
    for name, yt, yp, kw in _xcheck_loss_cases():
        sw = rng.uniform(0.0, 2.0, np.shape(yp)[0]) if weighted else None
        key = f"{name} {kw}" + (" weighted" if weighted else "")
        # per-sample (reduction=None), float64 end to end in Keras
        kv, kg = _keras_loss_value_and_grad(name, yt, yp, sw, kw, None)
        y_true_a, y_pred_a = kn.squeeze_or_expand_to_same_rank(yt, np.asarray(yp, float))
        rv = kn.reduce_weighted_values(kn.LOSSES[name][0](y_true_a, y_pred_a, **kw),
                                       sw, reduction="none")
        rg = kn.loss_grad(name, yt, yp, sample_weight=sw, reduction="sum", **kw)
        d1, d2 = _rel(kv, rv), _rel(kg, rg)
        _report("loss-none", key + " values", d1)
        _report("loss-none", key + " grad", d2)
        assert np.shape(kv) == np.shape(rv), key
        assert d1 < _tol() and d2 < _tol(), key
        # default reduction sum_over_batch_size (Keras result is float32)
        kv, kg = _keras_loss_value_and_grad(name, yt, yp, sw, kw, "sum_over_batch_size")
        rv = kn.loss(name, yt, yp, sample_weight=sw, **kw)
        rg = kn.loss_grad(name, yt, yp, sample_weight=sw, **kw)
        d1, d2 = _rel(kv, rv), _rel(kg, rg)
        _report("loss", key + " value", d1)
        _report("loss", key + " grad", d2)
        assert d1 < _tol() and d2 < _tol(), key
        seen.add(name)
    assert seen == set(_KERAS_LOSS_CLASS)


@needs_keras
def test_loss_reductions_vs_keras(float64_keras):
    rng = np.random.default_rng(3)
    yt = rng.normal(size=(6, 4))
    yp = rng.normal(size=(6, 4))
    sw = rng.uniform(0, 2, 6)
    for red in ("sum_over_batch_size", "sum", "mean_with_sample_weight"):
        for w in (None, sw, sw[:, None], np.float64(0.5)):
            kv = float(keras.losses.MeanSquaredError(reduction=red, dtype="float64")(
                yt, yp, sample_weight=w))
            rv = kn.loss("mse", yt, yp, sample_weight=w, reduction=red)
            d = _rel(kv, rv)
            _report("reduction", f"{red} w={None if w is None else np.shape(w)}", d)
            assert d < _tol()


# ---- metrics ----------------------------------------------------------------

def _kmetric(cls_name, yt, yp, sw=None, **kw):
    dtype = "float64"
    if "TopK" in cls_name and keras.backend.backend() == "tensorflow":
        # tf.math.in_top_k has no float64 kernel; top-k hits are counts anyway
        dtype = "float32"
        yp = np.asarray(yp, np.float32)
    m = getattr(keras.metrics, cls_name)(dtype=dtype, **kw)
    m.update_state(yt, yp, sample_weight=sw)
    return float(keras.ops.convert_to_numpy(m.result()))


@needs_keras
@pytest.mark.parametrize("weighted", [False, True])
def test_metrics_vs_keras(weighted, float64_keras):
    rng = np.random.default_rng(11)
    B, K = 64, 10
    sw = rng.uniform(0.0, 2.0, B) if weighted else None
    bin_t = rng.integers(0, 2, (B, 3)).astype(float)
    bin_p = rng.uniform(0, 1, (B, 3))
    bin_p[0, 0] = 0.5                     # exactly at the threshold
    cls_t = np.eye(K)[rng.integers(0, K, B)]
    cls_p = kn.softmax(rng.normal(size=(B, K)))
    labels = np.argmax(cls_t, -1)
    reg_t = rng.normal(size=(B, 4))
    reg_p = rng.normal(size=(B, 4))
    auc_t = rng.integers(0, 2, B).astype(float)
    auc_p = np.clip(0.3 * auc_t + rng.uniform(0, 0.7, B), 0, 1)
    auc_p[:3] = [0.0, 1.0, 0.5]
    logits = rng.normal(size=B) * 2

    checks = [
        ("BinaryAccuracy", {}, bin_t, bin_p, kn.metric("binary_accuracy", bin_t, bin_p, sw)),
        ("BinaryAccuracy", {"threshold": 0.7}, bin_t, bin_p,
         kn.metric("binary_accuracy", bin_t, bin_p, sw, threshold=0.7)),
        ("CategoricalAccuracy", {}, cls_t, cls_p,
         kn.metric("categorical_accuracy", cls_t, cls_p, sw)),
        ("SparseCategoricalAccuracy", {}, labels, cls_p,
         kn.metric("sparse_categorical_accuracy", labels, cls_p, sw)),
        ("SparseCategoricalAccuracy", {}, labels[:, None], cls_p,
         kn.metric("sparse_categorical_accuracy", labels[:, None], cls_p, sw)),
        ("TopKCategoricalAccuracy", {}, cls_t, cls_p,
         kn.metric("top_k_categorical_accuracy", cls_t, cls_p, sw)),
        ("TopKCategoricalAccuracy", {"k": 2}, cls_t, cls_p,
         kn.metric("top_k_categorical_accuracy", cls_t, cls_p, sw, k=2)),
        ("SparseTopKCategoricalAccuracy", {}, labels, cls_p,
         kn.metric("sparse_top_k_categorical_accuracy", labels, cls_p, sw)),
        ("MeanSquaredError", {}, reg_t, reg_p, kn.metric("mse", reg_t, reg_p, sw)),
        ("MeanAbsoluteError", {}, reg_t, reg_p, kn.metric("mae", reg_t, reg_p, sw)),
        ("RootMeanSquaredError", {}, reg_t, reg_p,
         kn.root_mean_squared_error(reg_t, reg_p, sw)),
        ("MeanAbsolutePercentageError", {}, reg_t, reg_p, kn.metric("mape", reg_t, reg_p, sw)),
        ("LogCoshError", {}, reg_t, reg_p, kn.metric("log_cosh", reg_t, reg_p, sw)),
        ("CategoricalCrossentropy", {}, cls_t, cls_p,
         kn.metric("categorical_crossentropy", cls_t, cls_p, sw)),
        ("BinaryCrossentropy", {}, bin_t, bin_p,
         kn.metric("binary_crossentropy", bin_t, bin_p, sw)),
        ("Precision", {}, bin_t, bin_p, kn.precision(bin_t, bin_p, sample_weight=sw)),
        ("Recall", {}, bin_t, bin_p, kn.recall(bin_t, bin_p, sample_weight=sw)),
        ("Precision", {"thresholds": 0.3}, bin_t, bin_p,
         kn.precision(bin_t, bin_p, threshold=0.3, sample_weight=sw)),
        ("Recall", {"thresholds": 0.3}, bin_t, bin_p,
         kn.recall(bin_t, bin_p, threshold=0.3, sample_weight=sw)),
        ("AUC", {}, auc_t, auc_p, kn.auc(auc_t, auc_p, sample_weight=sw)),
        ("AUC", {}, bin_t, bin_p, kn.auc(bin_t, bin_p, sample_weight=sw)),
        ("AUC", {"num_thresholds": 50}, auc_t, auc_p,
         kn.auc(auc_t, auc_p, num_thresholds=50, sample_weight=sw)),
        ("AUC", {"curve": "PR"}, auc_t, auc_p,
         kn.auc(auc_t, auc_p, curve="PR", sample_weight=sw)),
        ("AUC", {"summation_method": "minoring"}, auc_t, auc_p,
         kn.auc(auc_t, auc_p, summation_method="minoring", sample_weight=sw)),
        ("AUC", {"curve": "PR", "summation_method": "majoring"}, auc_t, auc_p,
         kn.auc(auc_t, auc_p, curve="PR", summation_method="majoring", sample_weight=sw)),
        ("AUC", {"curve": "PRGAIN"}, auc_t, auc_p,
         kn.auc(auc_t, auc_p, curve="PRGAIN", sample_weight=sw)),
        ("AUC", {"from_logits": True}, auc_t, logits,
         kn.auc(auc_t, logits, from_logits=True, sample_weight=sw)),
    ]
    for cls_name, kw, yt, yp, ref in checks:
        kv = _kmetric(cls_name, yt, yp, sw, **kw)
        d = _rel(kv, ref)
        _report("metric", f"{cls_name} {kw}" + (" weighted" if weighted else ""), d)
        f32 = "TopK" in cls_name and keras.backend.backend() == "tensorflow"
        assert d < (1e-6 if f32 else _tol()), (cls_name, kw, kv, ref)


# ---- regularizers ----------------------------------------------------------

@needs_keras
def test_regularizers_vs_keras(float64_keras):
    rng = np.random.default_rng(5)
    w = rng.normal(size=(4, 3))
    wt = keras.ops.convert_to_tensor(w, dtype="float64")

    def kval(r):
        return float(keras.ops.convert_to_numpy(r(wt)))

    # L1 keeps its factor in a backend tensor, which is float32 on TF: 1e-7.
    checks = [
        ("l1()", kval(keras.regularizers.L1()), kn.l1(w), 1e-7),
        ("l1(0.3)", kval(keras.regularizers.L1(0.3)), kn.l1(w, 0.3), 1e-7),
        ("l2()", kval(keras.regularizers.L2()), kn.l2(w), 1e-13),
        ("l2(0.3)", kval(keras.regularizers.L2(0.3)), kn.l2(w, 0.3), 1e-13),
        ("l1_l2()", kval(keras.regularizers.l1_l2()), kn.l1_l2(w), 1e-13),
        ("l1_l2(0.1,0.2)", kval(keras.regularizers.L1L2(l1=0.1, l2=0.2)),
         kn.l1_l2(w, 0.1, 0.2), 1e-13),
        ("get('l1')", kval(keras.regularizers.get("l1")), kn.l1(w), 1e-7),
        ("get('l2')", kval(keras.regularizers.get("l2")), kn.l2(w), 1e-13),
    ]
    on_tf = keras.backend.backend() == "tensorflow"  # ops.cast(0.01) via float32
    for name, kv, rv, tol in checks:
        d = _rel(kv, rv)
        _report("regularizer", name, d)
        assert d < (1e-7 if on_tf else tol), name
