"""The symbolic front end: weights, symbolic tensors, layers, and tracing into the IR."""
