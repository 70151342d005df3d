"""The hypothesis backend: strategies that draw a component's inputs from its types and `requires`.

`narrowing` reads the IR alone (no torch, no hypothesis): it turns the
requires that are per-element bounds on an input port into bounds to draw
within, and lists the rest, which drawn batches must be filtered by.
`strategies` draws batches of torch tensors that shrink toward simple values;
`replay` finds a failure reproducibly from a seed and saves its tensors.
The public names live in `mdl_lang.strategies`. This backend never imports
another backend: the caller hands in the filter for the requires it cannot
narrow (the torch backend can compile one).
"""
