"""compile / fit / evaluate / train_on_batch: the training half of a Model."""
from __future__ import annotations


class TrainingAPI:
    def __init__(self):
        self.optimizer = None
        self.compiled = False
