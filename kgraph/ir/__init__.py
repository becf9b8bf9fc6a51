"""kgraph's intermediate representation: a networkx graph of primitive ops."""
from kgraph.ir import ops  # noqa: F401  (registers the ops)
from kgraph.ir.graph import Graph, TensorType, Value  # noqa: F401
from kgraph.ir.registry import NodeView, all_ops, get_op  # noqa: F401
from kgraph.ir.verify import verify  # noqa: F401
