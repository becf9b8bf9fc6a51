"""Passes over the kgraph IR: autodiff, fusion, layout, folding, clean-up."""
