"""A small ResNet on the bundled digits: a Conv-BatchNorm stem and two residual blocks
(Conv-BN-ReLU-Conv-BN + identity shortcut, `Add`), global average pooling, Dense.
Test accuracy ~0.96-0.98 after 15 epochs."""
import kgraph
from kgraph import layers
from kgraph.models_zoo import data as zoo_data

EPOCHS = 15


def _block(x, filters):
    y = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
    y = layers.BatchNormalization()(y)
    y = layers.Activation("relu")(y)
    y = layers.Conv2D(filters, 3, padding="same", use_bias=False)(y)
    y = layers.BatchNormalization()(y)
    return layers.Activation("relu")(layers.add([x, y]))


def build(filters=16):
    inp = kgraph.Input(shape=(8, 8, 1))
    x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(inp)
    x = layers.Activation("relu")(layers.BatchNormalization()(x))
    x = _block(x, filters)
    x = _block(x, filters)
    x = layers.GlobalAveragePooling2D()(x)
    out = layers.Dense(10, activation="softmax")(x)
    return kgraph.Model(inp, out, name="resnet")


def compile(model):  # noqa: A001
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])


def data():
    return zoo_data.digits("image")
