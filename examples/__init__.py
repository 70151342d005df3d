"""Worked examples: the factories that the specs' `python "..."` bindings name."""
