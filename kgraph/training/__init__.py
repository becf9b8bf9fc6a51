"""Derivation of the train-step and eval graphs from a compiled model."""
