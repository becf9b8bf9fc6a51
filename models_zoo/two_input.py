"""Two-input Functional model: the top and bottom halves of each 8x8 digit enter through
separate inputs and branches, joined by `concatenate`. Test accuracy ~0.95-0.97."""
import kgraph
from kgraph import layers
from kgraph.models_zoo import data as zoo_data

EPOCHS = 15


def build():
    top = kgraph.Input(shape=(32,), name="top")
    bottom = kgraph.Input(shape=(32,), name="bottom")
    a = layers.Dense(64, activation="relu")(top)
    b = layers.Dense(64, activation="relu")(bottom)
    x = layers.concatenate([a, b])
    out = layers.Dense(10, activation="softmax", name="digit")(layers.Dense(64, activation="relu")(x))
    return kgraph.Model([top, bottom], out, name="two_input")


def compile(model):  # noqa: A001
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])


def data():
    (x_train, y_train), (x_test, y_test) = zoo_data.digits("flat")
    split = lambda x: [x[:, :32], x[:, 32:]]  # noqa: E731
    return (split(x_train), y_train), (split(x_test), y_test)
