"""Modular deep learning: the parts of decomposed networks, seen through mdl's interfaces."""
