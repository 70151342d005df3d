"""Numbers of a spec as cached tensors, for operations on the small tensors of a monitor."""

from __future__ import annotations

import torch

from mdl_lang import ir

Value = torch.Tensor | float | int | bool


class Constant:
    """A number of the spec as a 0-dim tensor, made once per dtype and device of the values it meets.

    An operation between a tensor and a Python number wraps the number into a
    fresh tensor each time, which on the small tensors of a monitor's checks
    costs more than the operation. The cached tensor has the dtype torch gives
    the number against that value (`torch.result_type`), so the result has the
    same dtype and bits; where it would not (an integer out of range, the
    half-precision floats, complex), the number itself is used, as before.
    Only for `+ - *` and comparisons: torch divides by a number through its
    reciprocal, so a tensor divisor would change the last bit.
    """

    __slots__ = ("_on_cpu", "_tensors", "value")

    def __init__(self, value: float | int) -> None:
        self.value = value
        # CPU tensors by dtype alone: asking a tensor for its device builds a new object each time.
        self._on_cpu: dict[torch.dtype, torch.Tensor | float | int] = {}
        self._tensors: dict[tuple[torch.dtype, torch.device], torch.Tensor | float | int] = {}

    @classmethod
    def of(cls, expr: ir.Expr) -> Constant | None:
        """The constant of a number literal (not a boolean), else None."""
        if isinstance(expr, ir.Const) and isinstance(expr.value, (int, float)) and not isinstance(expr.value, bool):
            return cls(expr.value)
        return None

    def against(self, other: Value) -> torch.Tensor | float | int:
        """This number in the form to combine with `other`: a cached tensor against a tensor."""
        if not isinstance(other, torch.Tensor):
            return self.value
        if other.is_cpu:
            cached = self._on_cpu.get(other.dtype)
            if cached is None:
                cached = self._on_cpu[other.dtype] = self._make(other)
            return cached
        key = (other.dtype, other.device)
        cached = self._tensors.get(key)
        if cached is None:
            cached = self._tensors[key] = self._make(other)
        return cached

    def _make(self, other: torch.Tensor) -> torch.Tensor | float | int:
        dtype = torch.result_type(other, self.value)
        if dtype in (torch.float32, torch.float64):
            exact = True
        elif dtype.is_floating_point or dtype.is_complex or dtype == torch.bool:
            # float16 and bfloat16 compute with a Python number in float32: a tensor of their own
            # dtype would round the number first (complex is left alone likewise, untested).
            exact = False
        else:
            exact = torch.iinfo(dtype).min <= self.value <= torch.iinfo(dtype).max
        return torch.tensor(self.value, dtype=dtype, device=other.device) if exact else self.value
