"""Runtime monitors: an `nn.Module` that runs a module and checks its contract at its boundary.

A monitor never changes what the module computes: checks read detached
tensors under `no_grad`, and the module's own output object is returned.
Modes: `raise` (ContractViolation at the first failure), `warn`, `record`
(results kept in `.reports`) and `off`; `every=N` checks one call in N;
`monitor_mode(...)` switches every monitor for a block.
"""

from __future__ import annotations

import contextlib
import contextvars
import re
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import NamedTuple

import torch
from torch import nn

from mdl_lang import blame, ir
from mdl_lang.backends.torch.boundary import Boundary, Violation
from mdl_lang.diagnostics import SourceMap
from mdl_lang.report import Blame, Result, Verdict, Witness, render_result

MODES = ("raise", "warn", "record", "off")
_mode_override: contextvars.ContextVar[str | None] = contextvars.ContextVar("mdl_monitor_mode", default=None)


class ContractViolation(Exception):
    """A clause failed in `raise` mode; `result` carries the blame report, `str()` renders it."""

    def __init__(self, result: Result, sources: SourceMap | None = None) -> None:
        self.result = result
        super().__init__(render_result(result, sources))


class ContractWarning(UserWarning):
    """A clause failed in `warn` mode."""


@contextlib.contextmanager
def monitor_mode(mode: str) -> Iterator[None]:
    """Switch every monitor to `mode` inside the block (e.g. `off` for a benchmark)."""
    _check_mode(mode)
    token = _mode_override.set(mode)
    try:
        yield
    finally:
        _mode_override.reset(token)


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"monitor mode must be one of {', '.join(MODES)}, not {mode!r}")


@dataclass
class MonitorOptions:
    """How a monitor reacts: `mode`, checking one call in `every`, where replays are saved."""

    mode: str = "raise"
    every: int = 1
    replay_dir: Path | None = Path("reports")
    spec_file: str = ""

    def __post_init__(self) -> None:
        _check_mode(self.mode)
        if self.every < 1:
            raise ValueError(f"every must be a positive number of calls, not {self.every}")

    @property
    def effective_mode(self) -> str:
        return _mode_override.get() or self.mode


@dataclass(slots=True)
class Session:
    """One monitored call: collects results and decides, per mode, what a failure does."""

    options: MonitorOptions
    sources: SourceMap
    sink: list[Result]
    failed_parts: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)

    def __call__(self) -> Session:
        """The session itself: `run_part` takes a session or a factory of one, and calls it only on a failure."""
        return self

    def report(self, result: Result) -> None:
        mode = self.options.effective_mode
        if result.verdict is Verdict.FAIL and mode == "raise":
            raise ContractViolation(result, self.sources)
        if mode == "warn" or (mode == "raise" and result.verdict is Verdict.UNKNOWN):
            warnings.warn(render_result(result, self.sources), ContractWarning, stacklevel=4)
        self.sink.append(result)


class Outcome(NamedTuple):
    """What one part's call left behind: its outputs and the ensures that failed."""

    outputs: tuple[torch.Tensor, ...]
    failed_ensures: tuple[str, ...]
    bad_input: bool


_NO_KEYWORDS: MappingProxyType = MappingProxyType({})


def run_part(
    boundary: Boundary,
    call: Callable[..., object],
    in_values: dict[str, object],
    upstream: blame.Upstream,
    path: tuple[str, ...],
    session: Callable[[], Session],
    own_ensures: Callable[[str], Blame] | None = None,
    args: tuple = (),
    kwargs: Mapping[str, object] = _NO_KEYWORDS,
) -> tuple[object, Outcome]:
    """Check requires, run `call(*args, **kwargs)`, check ensures; every failure is reported with its blame.

    The value checks of both phases are decided by one host sync after the
    call; a wrong shape or dtype is caught before it. `session` is a Session
    or a factory of one, called only when something is reported, so that a
    passing call allocates none. `own_ensures` decides the blame of a failed
    ensures when the default (the part itself) does not apply: a
    composition's ensures blames a failed part first.
    """
    fast = boundary.fast_requires(in_values)
    readings = fast.readings
    if readings is None:
        session = session()
        before = boundary.violations("requires", in_values, {})
        _report_requires(boundary, before, upstream, path, session, in_values)
    try:
        raw = call(*args, **kwargs)
    except Exception:
        if readings is not None and not readings.holds():
            # The module failed on input that broke its requires: that is the report.
            _report_requires(boundary, boundary.violations("requires", in_values, {}), upstream, path, session(),
                             in_values)
        raise
    outputs = _as_tuple(raw)
    if readings is not None and boundary.fast_ensures(fast, outputs) and readings.holds():
        return raw, Outcome(outputs, (), False)
    session = session()
    # An ensures may speak of the inputs too (`y == x / 255`).
    values = dict(in_values)
    values.update(zip((p.name for p in boundary.outputs), outputs, strict=False))
    slow_bound: dict[str, int] = {}
    if readings is not None:
        before = boundary.violations("requires", in_values, slow_bound)
        _report_requires(boundary, before, upstream, path, session, in_values)
    else:
        boundary.violations("requires", in_values, slow_bound)
    after = boundary.violations("ensures", values, slow_bound)
    failed = []
    for violation in after:
        if before:
            party = blame.for_ensures_after_bad_input(boundary.name, violation.name, path, upstream)
        else:
            party = (
                own_ensures(violation.name) if own_ensures else blame.for_ensures(boundary.name, violation.name, path)
            )
            failed.append(violation.name)
        session.report(_result(boundary, violation, party, in_values, slow_bound, session))
    if failed or before:
        session.failed_parts.append((boundary.name, path))
    return raw, Outcome(outputs, tuple(failed), bool(before))


def _report_requires(boundary: Boundary, violations, upstream, path, session: Session, in_values) -> None:
    for violation in violations:
        party = blame.for_requires(boundary.name, violation.name, path, upstream)
        session.report(_result(boundary, violation, party, in_values, {}, session))


def port_values(ports: tuple[ir.Port, ...], args: tuple, kwargs: dict) -> dict[str, object]:
    """The call's arguments by input port: positional ones in port order, then keywords by name."""
    values = dict(zip((port.name for port in ports), args, strict=False))
    values.update({name: value for name, value in kwargs.items() if any(p.name == name for p in ports)})
    return values


def _as_tuple(raw: object) -> tuple:
    if isinstance(raw, torch.Tensor):
        return (raw,)
    if isinstance(raw, dict):
        return tuple(raw.values())
    if isinstance(raw, (tuple, list)):
        return tuple(raw)
    return (raw,)


def _result(
    boundary: Boundary, violation: Violation, party: Blame, inputs: dict, bound: dict, session: Session,
) -> Result:
    verdict = Verdict.UNKNOWN if violation.error else Verdict.FAIL
    replay = _save_replay(boundary, violation, inputs, session) if verdict is Verdict.FAIL else None
    witness = Witness(
        violation.samples or (), violation.values, replay, tuple(sorted(bound.items())),
    )
    return Result(
        boundary.name, violation.name, violation.kind, violation.fragment, "monitor", verdict, violation.span,
        violation.message, party if verdict is Verdict.FAIL else None, witness,
    )


def _save_replay(boundary: Boundary, violation: Violation, inputs: dict, session: Session) -> str | None:
    """Save the offending inputs of the part that failed, for `mdl replay`."""
    folder = session.options.replay_dir
    if folder is None:
        return None
    samples = list(violation.samples) if violation.samples else None
    tensors = {
        name: _offending(value.detach(), samples) for name, value in inputs.items() if isinstance(value, torch.Tensor)
    }
    folder.mkdir(parents=True, exist_ok=True)
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{boundary.name}-{violation.name}").strip("_")
    index = 0
    while (folder / f"{stem}-{index}.pt").exists():
        index += 1
    path = folder / f"{stem}-{index}.pt"
    torch.save({
        "schema": "mdl-replay/1", "spec": session.options.spec_file, "component": boundary.name,
        "clause": violation.name, "kind": violation.kind, "samples": list(violation.samples or ()),
        "inputs": tensors,
    }, path)
    return str(path)


def _offending(tensor: torch.Tensor, samples: list[int] | None) -> torch.Tensor:
    selected = tensor[samples] if samples is not None and tensor.dim() else tensor
    return selected.cpu().clone()


class Switchable:
    """The `mode` of a monitor, switchable after binding (`model.mode = "off"`)."""

    options: MonitorOptions

    @property
    def mode(self) -> str:
        return self.options.mode

    @mode.setter
    def mode(self, mode: str) -> None:
        _check_mode(mode)
        self.options.mode = mode


class MonitoredModule(Switchable, nn.Module):
    """A module bound to its spec: runs it unchanged and checks its contract on every (N-th) call."""

    def __init__(
        self, module: nn.Module, name: str, component: ir.Module, sources: SourceMap, options: MonitorOptions,
    ) -> None:
        super().__init__()
        self.module = module
        self.contract_name = name
        self.component = component
        self.options = options
        self.sources = sources
        self.reports: list[Result] = []
        self._calls = 0
        self._boundary: Boundary | None = None
        self._path = (name,)
        self._caller = blame.caller(self._path)

    @property
    def boundary(self) -> Boundary:
        if self._boundary is None:
            self._boundary = Boundary(self.contract_name, self.component, self.sources)
        return self._boundary

    def forward(self, *args, **kwargs):
        if not should_check(self):
            return self.module(*args, **kwargs)
        boundary = self._boundary or self.boundary
        if len(args) == 1 and not kwargs and len(boundary.inputs) == 1:
            values = {boundary.inputs[0].name: args[0]}
        else:
            values = port_values(boundary.inputs, args, kwargs)
        # The wrapped module from `_modules` itself: `self.module` goes through nn.Module.__getattr__.
        raw, _ = run_part(
            boundary, self._modules["module"], values, self._caller, self._path, self._session, None, args, kwargs,
        )
        return raw

    def _session(self) -> Session:
        """A session for this call, made only when a check fails (a passing call needs none)."""
        return Session(self.options, self.sources, self.reports)

    # The monitor is transparent for weights: its state is the wrapped module's.
    def state_dict(self, *args, **kwargs):
        return self.module.state_dict(*args, **kwargs)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        return self.module.load_state_dict(state_dict, strict=strict, assign=assign)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_boundary"] = None  # compiled closures are rebuilt from the IR after unpickling
        return state


def _never() -> bool:
    return False


# Whether torch is tracing for export or compilation (checks then stay out of the graph); the probes
# are looked up once and called directly, since they run on every monitored call.
_compiler = getattr(torch, "compiler", None)
_is_exporting: Callable[[], bool] = getattr(_compiler, "is_exporting", None) or _never
_is_compiling: Callable[[], bool] = getattr(_compiler, "is_compiling", None) or _never
_is_tracing: Callable[[], bool] = torch.jit.is_tracing


def _tracing() -> bool:
    return _is_exporting() or _is_compiling() or _is_tracing()


def should_check(monitor) -> bool:
    """Whether this call of a monitor (module or composition) is checked: mode, sampling, tracing."""
    options = monitor.options
    if (_mode_override.get() or options.mode) == "off" or _tracing():
        return False
    # Straight into the instance dict: nn.Module.__setattr__ would first look for a parameter of that name.
    calls = monitor.__dict__["_calls"] = monitor._calls + 1
    return options.every == 1 or (calls - 1) % options.every == 0
