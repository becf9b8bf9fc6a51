"""`TerminateOnNaN`: stop fit at the first batch whose loss is NaN or infinite (or raise,
with raise_error=True), before the bad weights are trained further."""
from __future__ import annotations

import math
import sys

from kgraph.callbacks.callback import Callback


class TerminateOnNaN(Callback):
    def __init__(self, raise_error: bool = False):
        super().__init__()
        self.raise_error = raise_error

    def on_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and (math.isnan(loss) or math.isinf(loss)):
            if self.raise_error:
                raise RuntimeError(f"NaN or Inf loss encountered at batch {batch}. Loss value: {loss}. "
                                   f"Terminating training immediately.")
            sys.stdout.write(f"Batch {batch}: Invalid loss, terminating training\n")
            self.model.stop_training = True
