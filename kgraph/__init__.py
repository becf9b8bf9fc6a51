"""kgraph: Keras models compiled to standard ONNX, run and trained by onnxruntime."""
from kgraph.saving import preflight as _preflight

_preflight.start_helper()  # the HDF5 check's helper process starts while the rest is imported

from kgraph import activations, initializers, layers, models, regularizers, utils  # noqa: F401,E402
from kgraph.engine.input_layer import Input  # noqa: F401,E402
from kgraph.models import Model, Sequential  # noqa: F401,E402

__version__ = "0.1.0"
from kgraph import callbacks, config, datasets, losses, metrics, optimizers, schedules  # noqa: F401,E402
