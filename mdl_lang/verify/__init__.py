"""Exact verification of piecewise-linear networks (`mdl verify`)."""
