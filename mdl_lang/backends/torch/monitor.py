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
import sys
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import NamedTuple

import torch
from torch import nn

from mdl_lang import blame, ir
from mdl_lang.backends.torch.boundary import Boundary, FastCall, Violation, versions
from mdl_lang.diagnostics import SourceMap
from mdl_lang.report import Blame, Result, Verdict, Witness, render_result

MODES = ("raise", "warn", "record", "off")
_mode_override: contextvars.ContextVar[str | None] = contextvars.ContextVar("mdl_monitor_mode", default=None)


class ContractViolation(Exception):
    """A clause failed in `raise` mode; `result` carries the blame report, `str()` renders it."""

    def __init__(self, result: Result, sources: SourceMap | None = None, text: str | None = None) -> None:
        self.result = result
        super().__init__(text if text is not None else render_result(result, sources))

    def __reduce__(self):
        # Pickled (a DataLoader worker, a process pool) with its rendered text: the sources stay behind.
        return type(self), (self.result, None, str(self))


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
    """One monitored call: collects results and decides, per mode, what a failure does.

    `faults` are the failures found so far in the call, each with its samples
    and the party blamed: a composition's ensures that fails on the same
    samples is blamed on that party (LANGUAGE.md section 7).
    """

    options: MonitorOptions
    sources: SourceMap
    sink: list[Result]
    faults: list[blame.Fault] = field(default_factory=list)

    def __call__(self) -> Session:
        """The session itself: `run_part` takes a session or a factory of one, and calls it only on a failure."""
        return self

    def report(self, result: Result) -> None:
        mode = self.options.effective_mode
        if result.verdict is Verdict.FAIL and mode == "raise":
            raise ContractViolation(result, self.sources)
        if mode == "warn" or (mode == "raise" and result.verdict is Verdict.UNKNOWN):
            warnings.warn(render_result(result, self.sources), ContractWarning, stacklevel=_callers_level())
        self.sink.append(result)

    def faults_inside(self, path: tuple[str, ...]) -> tuple[blame.Fault, ...]:
        """The failures of the parts inside the composition at `path`, in the order they happened."""
        depth = len(path)
        return tuple(fault for fault in self.faults if len(fault.path) > depth and fault.path[:depth] == path)


_INTERNAL = (str(Path(__file__).resolve().parents[2]), str(Path(torch.__file__).resolve().parent))
"""Where mdl and torch live: a warning points past their frames, at the line that called the model."""


def _callers_level() -> int:
    """The `stacklevel` of the first frame outside mdl and torch, for a `warnings.warn` in our caller."""
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_code.co_filename.startswith(_INTERNAL):
        frame, level = frame.f_back, level + 1
    return level


class Outcome(NamedTuple):
    """What one part's call left behind: its outputs, its failed ensures (each with its samples and blame),
    and whether one of its requires failed."""

    outputs: tuple
    faults: tuple[blame.Fault, ...] = ()
    bad_input: bool = False

    @property
    def failed_ensures(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(fault.clause for fault in self.faults))


class Requires:
    """The slow path of one call's requires: each violation with the parties blamed for it, found at most once.

    A composition makes one before its parts run: a part whose requires fail
    asks it (through `blame.composition_input`) whether the composition's own
    requires failed on the same samples, before the composition's boundary
    reports it after the call.

    The slow path runs after the call, on the inputs as they are then; a
    module may have changed them in place. `before` is the fast path's
    reading of the inputs as given (their statistics, how many tests are the
    requires', their version counters), which decides instead: requires that
    held then held, and requires that failed on inputs the module has since
    overwritten are reported as such, without samples that are gone.
    """

    __slots__ = ("_shares", "before", "bound", "boundary", "path", "upstream", "values")

    def __init__(
        self, boundary: Boundary, values: dict[str, object], upstream: blame.Upstream, path: tuple[str, ...],
        before: FastCall | None = None,
    ) -> None:
        self.boundary = boundary
        self.values = values
        self.upstream = upstream
        self.path = path
        self.before = before
        self.bound: dict[str, int] = {}
        self._shares: list[tuple[Violation, blame.Share]] | None = None

    def shares(self) -> list[tuple[Violation, blame.Share]]:
        """Every violation, once for each party that shares its blame (with that party's samples)."""
        if self._shares is None:
            self._shares = []
            before = self.before
            if before is not None and before.readings.passed(before.tests):
                self.boundary.bind_input_dims(self.values, self.bound)  # for the ensures' shapes and reports
                return self._shares
            if self.changed():
                self.boundary.bind_input_dims(self.values, self.bound)
                self.add(self.boundary.modified_in_place())
                return self._shares
            for violation in self.boundary.violations("requires", self.values, self.bound):
                self.add(violation)
            if not self._shares and self._passes_now():
                self.add(self.boundary.modified_in_place())
        return self._shares

    def changed(self) -> bool:
        """Whether the module changed an input in place, as the inputs' version counters tell."""
        return self.before is not None and versions(self.values) != self.before.versions

    def _passes_now(self) -> bool:
        """Whether requires that failed on the inputs as given pass on them now: for inputs without version
        counters (inference tensors), the sign that the module changed them. The fast checks are
        deterministic, so passing now where they failed before means the inputs changed."""
        if self.before is None:
            return False
        again = self.boundary.fast_requires(self.values).readings
        return again is not None and again.holds()

    @property
    def replayable(self) -> dict[str, object] | None:
        """The inputs to save for a replay: None where the module changed them, and they are not what it got."""
        return None if self.changed() else self.values

    def add(self, violation: Violation) -> None:
        shares = self.shares()
        for share in blame.requires_failure(
            self.boundary.name, violation.name, self.path, self.upstream, violation.samples,
        ):
            shares.append((violation, share))

    def faults(self) -> tuple[blame.Fault, ...]:
        """The requires that failed, each with its samples and blame (an undecided one blames no one)."""
        name, path = self.boundary.name, self.path
        return tuple(
            blame.Fault(name, violation.name, "requires", path, share.samples, share.blame)
            for violation, share in self.shares() if violation.error is None
        )

    def report(self, session: Session) -> None:
        """Report every share, and record who was blamed where for what follows from them."""
        for violation, share in self.shares():
            narrowed = self.boundary.narrowed(violation, share.samples, self.values, self.bound)
            session.report(_result(self.boundary, narrowed, share.blame, self.replayable, {}, session, self.path))
        session.faults.extend(self.faults())


_NO_KEYWORDS: MappingProxyType = MappingProxyType({})


def run_part(
    boundary: Boundary,
    call: Callable[..., object],
    in_values: dict[str, object],
    upstream: blame.Upstream,
    path: tuple[str, ...],
    session: Callable[[], Session],
    composite: bool = False,
    args: tuple = (),
    kwargs: Mapping[str, object] = _NO_KEYWORDS,
    requires: Requires | None = None,
) -> tuple[object, Outcome]:
    """Check requires, run `call(*args, **kwargs)`, check ensures; every failure is reported with its blame.

    The value checks of both phases are decided by one host sync after the
    call; a wrong shape or dtype is caught before it. `session` is a Session
    or a factory of one, called only when something is reported, so that a
    passing call allocates none. `composite` marks a composition's boundary:
    its failed ensures are blamed, sample by sample, on whoever was blamed for
    a part's failure there first. `requires` is the call's slow requires when
    the caller made it already (a composition, for its parts to ask).
    """
    fast = boundary.fast_requires(in_values)
    readings = fast.readings
    if readings is None:
        # A wrong call (shape, dtype, a check that cannot run): reported before the module runs.
        requires = requires or Requires(boundary, in_values, upstream, path)
        requires.report(session())
    elif requires is not None:
        # Before the parts run: one that changes the composition's input in place must not change its verdict.
        requires.before = fast
    try:
        raw = call(*args, **kwargs)
    except Exception as error:
        _mark_raised_in(error, path)
        if readings is not None and not readings.holds():
            # The module failed on input that broke its requires: that is the report.
            (requires or Requires(boundary, in_values, upstream, path, fast)).report(session())
        raise
    outputs = outputs_of(raw, boundary.outputs)
    if readings is not None and boundary.fast_ensures(fast, outputs) and readings.holds():
        return raw, Outcome(outputs)
    session = session()
    if requires is None:
        requires = Requires(boundary, in_values, upstream, path, fast if readings is not None else None)
    if readings is not None:
        requires.report(session)
    return raw, _ensures(boundary, requires, outputs, session, composite)


RAISED_IN = "mdl_raised_in"
"""The attribute an exception raised by a monitored module carries: the path of the innermost monitored
component it came out of (a part of a composition), for the blame of a crash."""


def _mark_raised_in(error: Exception, path: tuple[str, ...]) -> None:
    """Mark `error` with the innermost monitored component it came out of, and say so in its traceback."""
    if not hasattr(error, RAISED_IN):
        with contextlib.suppress(AttributeError):  # an exception type that takes no attributes
            setattr(error, RAISED_IN, path)
            if len(path) > 1 and hasattr(error, "add_note"):  # Python 3.11 and later
                error.add_note(f"mdl: raised inside the part {' > '.join(path)}")


def _ensures(boundary: Boundary, requires: Requires, outputs: tuple, session: Session, composite: bool) -> Outcome:
    """The slow path of a call's ensures, after its requires: each failure split among the parties blamed."""
    # An ensures may speak of the inputs too (`y == x / 255`).
    values = dict(requires.values)
    values.update(zip((port.name for port in boundary.outputs), outputs, strict=False))
    path, bound = requires.path, requires.bound
    bad_input = requires.faults()
    parts = session.faults_inside(path) if composite else None
    faults = []
    for violation in boundary.violations("ensures", values, bound, returned=len(outputs)):
        for share in blame.ensures_failure(boundary.name, violation.name, path, violation.samples, bad_input, parts):
            narrowed = boundary.narrowed(violation, share.samples, values, bound)
            result = _result(boundary, narrowed, share.blame, requires.replayable, bound, session, path)
            if result.verdict is Verdict.FAIL:
                faults.append(blame.Fault(boundary.name, violation.name, "ensures", path, share.samples, share.blame))
            session.report(result)
    session.faults.extend(faults)
    return Outcome(outputs, tuple(faults), bool(requires.shares()))


def port_values(ports: tuple[ir.Port, ...], args: tuple, kwargs: dict) -> dict[str, object]:
    """The call's arguments by input port: positional ones in port order, then keywords by name."""
    values = dict(zip((port.name for port in ports), args, strict=False))
    values.update({name: value for name, value in kwargs.items() if any(p.name == name for p in ports)})
    return values


def outputs_of(raw: object, ports: tuple[ir.Port, ...]) -> tuple:
    """A module's result as the values of its output ports, in port order.

    A tensor is the one output, a tuple or list is in port order, and a dict
    is matched by port name (in its own order only when its keys are not the
    port names).
    """
    if isinstance(raw, torch.Tensor):
        return (raw,)
    if isinstance(raw, Mapping):
        names = [port.name for port in ports]
        if all(name in raw for name in names):
            return tuple(raw[name] for name in names)
        return tuple(raw.values())
    if isinstance(raw, (tuple, list)):
        return tuple(raw)
    return (raw,)


def _result(
    boundary: Boundary, violation: Violation, party: Blame, inputs: dict | None, bound: dict, session: Session,
    path: tuple[str, ...],
) -> Result:
    """The report of a violation; `inputs` are saved for a replay, None where they are not the call's."""
    verdict = Verdict.UNKNOWN if violation.error else Verdict.FAIL
    replayable = verdict is Verdict.FAIL and violation.replayable and inputs is not None
    replay = _save_replay(boundary, violation, inputs, session, path) if replayable else None
    witness = Witness(
        violation.samples or (), violation.values, replay, tuple(sorted(bound.items())),
    )
    return Result(
        boundary.name, violation.name, violation.kind, violation.fragment, "monitor", verdict, violation.span,
        violation.message, party if verdict is Verdict.FAIL else None, witness,
    )


def _save_replay(
    boundary: Boundary, violation: Violation, inputs: dict, session: Session, path: tuple[str, ...],
) -> str | None:
    """Save the offending inputs of the part that failed, for `mdl replay`: with the components it ran inside
    (`path`, outermost first), so that a part of a `replace` is rebuilt with the replacement in effect, and
    the spec's absolute path, so that the file replays from any folder."""
    folder = session.options.replay_dir
    if folder is None:
        return None
    samples = list(violation.samples) if violation.samples else None
    batched = {port.name for port in boundary.inputs if port.type.has_batch}
    tensors = {
        # A port without the batch axis (a weight vector) is the same for every sample: kept whole.
        name: _offending(value.detach(), samples if name in batched else None)
        for name, value in inputs.items() if isinstance(value, torch.Tensor)
    }
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{boundary.name}-{violation.name}").strip("_")
    spec = str(Path(session.options.spec_file).resolve()) if session.options.spec_file else ""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        index = 0
        while (folder / f"{stem}-{index}.pt").exists():
            index += 1
        file = folder / f"{stem}-{index}.pt"
        torch.save({
            "schema": "mdl-replay/1", "spec": spec, "component": boundary.name, "path": list(path),
            "clause": violation.name, "kind": violation.kind, "samples": list(violation.samples or ()),
            "inputs": tensors,
        }, file)
    except OSError as error:
        # The report matters more than its replay file: it goes on without one, and says why.
        warnings.warn(f"mdl: the replay of `{violation.name}` could not be saved in {folder}: {error}",
                      RuntimeWarning, stacklevel=_callers_level())
        return None
    return str(file)


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
        # Transparent for weights, alone or inside another module: its state is the wrapped module's, under
        # the monitor's own keys (`body.weight`, not `body.module.weight`), saved and loaded alike. The
        # private names are those torch 2.2 has (public since 2.5).
        self._register_state_dict_hook(_unwrapped_keys)
        self._register_load_state_dict_pre_hook(_wrapped_keys, with_module=True)

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
            boundary, self._modules["module"], values, self._caller, self._path, self._session, False, args, kwargs,
        )
        return raw

    def _session(self) -> Session:
        """A session for this call, made only when a check fails (a passing call needs none)."""
        return Session(self.options, self.sources, self.reports)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_boundary"] = None  # compiled closures are rebuilt from the IR after unpickling
        return state


_WRAPPED = "module."
"""The wrapped module's key in a monitor's state, which the monitor's state dict leaves out."""


def _unwrapped_keys(monitor: nn.Module, state: dict, prefix: str, local_metadata: dict) -> None:
    """State-dict hook: the wrapped module's entries under the monitor's own prefix.

    Its version metadata is copied there too (for a plain module loading
    them), and kept where the monitor loads it from.
    """
    inner = prefix + _WRAPPED
    for key in [key for key in state if key.startswith(inner)]:
        state[prefix + key[len(inner):]] = state.pop(key)
    metadata = getattr(state, "_metadata", None)
    if metadata is not None:
        for key in [key for key in metadata if key.startswith(inner)]:
            metadata[prefix + key[len(inner):]] = metadata[key]
        if inner[:-1] in metadata:
            metadata[prefix[:-1]] = metadata[inner[:-1]]


def _wrapped_keys(monitor: nn.Module, state: dict, prefix: str, *_) -> None:
    """Load-state-dict pre-hook: the entries under the monitor's prefix go to the wrapped module."""
    for key in [key for key in state if key.startswith(prefix)]:
        state[prefix + _WRAPPED + key[len(prefix):]] = state.pop(key)


def _never() -> bool:
    return False


# Whether torch is tracing for export or compilation (checks then stay out of the graph); the probes
# are looked up once and called directly, since they run on every monitored call.
_compiler = getattr(torch, "compiler", None)
_is_exporting: Callable[[], bool] = getattr(_compiler, "is_exporting", None) or _never
_is_compiling: Callable[[], bool] = getattr(_compiler, "is_compiling", None) or _never
_is_tracing: Callable[[], bool] = torch.jit.is_tracing
# torch.func transforms (private API, probed once): under `vmap` a tensor is one sample of a batch the
# monitor never sees, and reading a statistic back is an error there, so checks step aside under it too.
_functorch = getattr(torch._C, "_functorch", None)
_peek_transform: Callable[[], object] = getattr(_functorch, "peek_interpreter_stack", None) or (lambda: None)
_VMAP = getattr(getattr(_functorch, "TransformType", None), "Vmap", None)


def _under_vmap() -> bool:
    if _peek_transform() is None:
        return False
    return any(interpreter.key() == _VMAP for interpreter in _functorch.get_interpreter_stack())


def _tracing() -> bool:
    return _is_exporting() or _is_compiling() or _is_tracing() or _under_vmap()


def should_check(monitor) -> bool:
    """Whether this call of a monitor (module or composition) is checked: mode, sampling, tracing."""
    options = monitor.options
    if (_mode_override.get() or options.mode) == "off" or _tracing():
        return False
    # Straight into the instance dict: nn.Module.__setattr__ would first look for a parameter of that name.
    calls = monitor.__dict__["_calls"] = monitor._calls + 1
    return options.every == 1 or (calls - 1) % options.every == 0
