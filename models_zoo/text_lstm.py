"""Embedding+LSTM text classifier on the bundled synthetic sequence task (is the running
sum of the tokens positive?). Test accuracy ~0.95+ after 10 epochs."""
import kgraph
from kgraph import layers
from kgraph.models_zoo import data as zoo_data

EPOCHS = 10


def build(vocab=10, length=20):
    return kgraph.Sequential([
        kgraph.Input(shape=(length,)),
        layers.Embedding(vocab, 16),
        layers.LSTM(32),
        layers.Dense(1, activation="sigmoid"),
    ], name="text_lstm")


def compile(model):  # noqa: A001
    model.compile(optimizer=kgraph.optimizers.Adam(learning_rate=0.005), loss="binary_crossentropy",
                  metrics=["accuracy"])


def data():
    return zoo_data.running_sum_sign()
