"""Keras layers."""
from kgraph.engine.input_layer import Input, InputLayer  # noqa: F401
from kgraph.engine.layer import Layer  # noqa: F401
from kgraph.layers.activation_layers import ELU, LeakyReLU, PReLU, ReLU, Softmax  # noqa: F401
from kgraph.layers.core import (  # noqa: F401
    Activation, Dense, Dropout, Embedding, Flatten, Identity, Permute, RepeatVector, Reshape)
from kgraph.layers.merge import (  # noqa: F401
    Add, Average, Concatenate, Dot, Maximum, Minimum, Multiply, Subtract, add, average,
    concatenate, dot, maximum, minimum, multiply, subtract)
from kgraph.layers.recurrent import GRU, LSTM, Bidirectional, SimpleRNN  # noqa: F401
from kgraph.layers.conv import Conv1D, Conv2D, Conv2DTranspose, DepthwiseConv2D, SeparableConv2D  # noqa: F401,E501
from kgraph.layers.noise import GaussianDropout, GaussianNoise, SpatialDropout2D  # noqa: F401
from kgraph.layers.normalization import BatchNormalization, LayerNormalization  # noqa: F401
from kgraph.layers.pooling import (  # noqa: F401
    AveragePooling1D, AveragePooling2D, GlobalAveragePooling1D, GlobalAveragePooling2D,
    GlobalMaxPooling1D, GlobalMaxPooling2D, MaxPooling1D, MaxPooling2D)
from kgraph.layers.reshaping import Cropping2D, UpSampling2D, ZeroPadding2D  # noqa: F401
