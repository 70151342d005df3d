"""Bring models saved by other frameworks into PyTorch so that specs can bind them."""
