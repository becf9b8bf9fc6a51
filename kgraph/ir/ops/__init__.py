"""The primitive op set. Importing this package registers every op."""
from kgraph.ir.ops.core import as_value, building, coerce, current_graph, sum_to  # noqa: F401
from kgraph.ir.ops.conv import avg_pool, conv, conv_transpose, max_pool, same_pads  # noqa: F401
from kgraph.ir.ops.elementwise import (  # noqa: F401
    add, div, equal, greater, greater_equal, less, less_equal, logical_and, maximum, minimum,
    mul, pow, sub, where)
from kgraph.ir.ops.misc import (  # noqa: F401
    argmax, cast, clip, dropout, identity, numel, one_hot, random_normal_like, stop_gradient,
    zeros_like)
from kgraph.ir.ops.reduce import (  # noqa: F401
    matmul, reduce_max, reduce_mean, reduce_min, reduce_sum, swap_last)
from kgraph.ir.ops.shape import (  # noqa: F401
    concat, expand, expand_like, gather, pad, reshape, reshape_like, scatter_add, slice_, squeeze,
    transpose, unsqueeze)
from kgraph.ir.ops.pair_max import pair_max  # noqa: F401
from kgraph.ir.ops.patches import col2im, im2col  # noqa: F401
from kgraph.ir.ops.crossentropy import crossentropy, softmax_crossentropy  # noqa: F401
from kgraph.ir.ops.split import split  # noqa: F401
from kgraph.ir.ops.unary import (  # noqa: F401
    abs, elu, erf, exp, floor, leaky_relu, log, log_softmax, neg, relu, selu, sigmoid, sign,
    softmax, softplus, sqrt, tanh)


def square(x):
    (x,) = coerce(x)
    return x * x
from kgraph.ir.ops.fused import dense  # noqa: F401,E402
from kgraph.ir.ops.recurrence import lstm_sequence  # noqa: F401,E402
