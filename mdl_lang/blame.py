"""The blame rules of LANGUAGE.md section 7: exactly one party per failure, decided per sample.

Findler and Felleisen's contracts assign a `requires` to the party that
supplied the value and an `ensures` to the party that produced it. In a
composition the supplier of an inner module's input is the upstream part,
or the composition itself when the input is the composition's own. A batch
is many calls at once: a clause that fails on several samples may be one
party's fault on some of them and another's on the rest, so every decision
here splits the failing samples and returns one share per blamed party.
These functions only decide; backends tell them what failed, where, and
what was already blamed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from mdl_lang.report import Blame, Role

Samples = tuple[int, ...] | None
"""The samples a clause failed on, in order; None for the whole call (a wrong shape or dtype)."""


@dataclass(frozen=True)
class Fault:
    """A clause of `component` (at `path`) that failed on `samples`, and the party blamed for it there.

    Kept so that what follows from it on the same samples (a downstream
    requires, a composition's ensures) is blamed on the same party.
    """

    component: str
    clause: str
    kind: str
    path: tuple[str, ...]
    samples: Samples
    blame: Blame


@dataclass(frozen=True)
class Share:
    """One party's share of a failure: the samples it is blamed for."""

    samples: Samples
    blame: Blame


@dataclass(frozen=True)
class Upstream:
    """Who supplied a module's input, and on which samples that input was already at fault.

    The caller (`is_caller`) answers for every requires failure of the
    outermost module. Inside `composition`, the input came from a part
    (`party`) or from the composition's own input (`party` is the
    composition): `faults` are the failures that made it bad on some samples
    (the part's failed ensures, the composition's failed requires), and a
    requires failing on any other sample is the composition's fault.
    `supplied` is those faults, or a function that finds them: a
    composition's own requires are decided after its parts have run, so its
    first part asks only when its requires fail.
    """

    party: str
    path: tuple[str, ...]
    is_caller: bool
    composition: str | None = None
    supplied: tuple[Fault, ...] | Callable[[], tuple[Fault, ...]] = ()

    @property
    def faults(self) -> tuple[Fault, ...]:
        return self.supplied() if callable(self.supplied) else self.supplied

    @property
    def failed_ensures(self) -> tuple[str, ...]:
        """The supplying part's ensures that failed on some sample, each named once."""
        return tuple(dict.fromkeys(fault.clause for fault in self.faults if fault.kind == "ensures"))


def caller(path: tuple[str, ...] = ()) -> Upstream:
    return Upstream("caller", path, True)


def part(name: str, path: tuple[str, ...], composition: str, faults: tuple[Fault, ...] = ()) -> Upstream:
    """The output of part `name` of `composition`; `faults` are its failed ensures, each with its samples."""
    return Upstream(name, path, False, composition, faults)


def composition_input(
    composition: str, path: tuple[str, ...], faults: tuple[Fault, ...] | Callable[[], tuple[Fault, ...]],
) -> Upstream:
    """The input of `composition` as its first parts receive it; `faults` are its own failed requires."""
    return Upstream(composition, path, False, composition, faults)


def requires_failure(
    module: str, clause: str, module_path: tuple[str, ...], upstream: Upstream, samples: Samples,
) -> tuple[Share, ...]:
    """A `requires` of `module` failed on `samples`: on each, whoever supplied the bad input there.

    That is the caller for the outermost module. Inside a composition it is
    the party already blamed for the supplier's failure on that sample (the
    upstream part whose ensures failed, or whoever broke the composition's
    own requires), and the composition where its supplier kept its contract:
    then the composition's parts do not fit.
    """
    if upstream.is_caller:
        where = f"`{module}`" if len(module_path) <= 1 else f"`{module}` (through {' > '.join(module_path[:-1])})"
        return (Share(samples, Blame(
            "caller", Role.CALLER, module_path, f"the data given to {where} breaks its requires `{clause}`",
        )),)
    covered, rest = _attribute(samples, upstream.faults)
    shares = [Share(covered_samples, _then(faults, f"`{module}` received it and its requires `{clause}` failed"))
              for covered_samples, faults in covered]
    if rest != ():
        shares.append(Share(rest, _misfit(module, clause, module_path, upstream)))
    return tuple(shares)


def _misfit(module: str, clause: str, module_path: tuple[str, ...], upstream: Upstream) -> Blame:
    composition = upstream.composition or module
    if upstream.party == composition:
        reason = (f"the input of `{composition}` kept its requires, but they do not establish `{module}`'s "
                  f"requires `{clause}`: the composition does not fit its part")
    else:
        reason = (f"`{upstream.party}` kept its ensures, but they do not establish `{module}`'s requires "
                  f"`{clause}`: the parts do not fit")
    return Blame(composition, Role.COMPOSITION, module_path, reason)


def for_ensures(module: str, clause: str, module_path: tuple[str, ...]) -> Blame:
    """An `ensures` failed while the module's requires held: the module is at fault."""
    return Blame(module, Role.MODULE, module_path, f"ensures `{clause}` failed while its requires held")


def ensures_failure(
    module: str, clause: str, module_path: tuple[str, ...], samples: Samples, bad_input: tuple[Fault, ...],
    parts: tuple[Fault, ...] | None = None,
) -> tuple[Share, ...]:
    """An `ensures` of `module` failed on `samples`: on each, who is at fault there.

    Where the module's requires failed (`bad_input`), whoever was blamed for
    that. Elsewhere the module itself; or, for a composition (`parts`: its
    parts' failures in this call), the party already blamed for a part's
    failure on that sample, and the composition where every part kept its
    contract.
    """
    consequence = f"the ensures `{clause}` of `{module}` then failed too"
    covered, rest = _attribute(samples, bad_input)
    if parts is not None:
        inside, rest = _attribute(rest, parts)
        covered += inside
    shares = [Share(covered_samples, _then(faults, consequence)) for covered_samples, faults in covered]
    if rest != ():
        shares.append(Share(rest, for_ensures(module, clause, module_path) if parts is None else Blame(
            module, Role.COMPOSITION, module_path,
            f"every part kept its contract, but together they do not establish `{clause}`",
        )))
    return tuple(shares)


def _then(faults: tuple[Fault, ...], consequence: str) -> Blame:
    """The blame of the first of `faults` (all blame one party), carried on to what followed from them."""
    first = faults[0].blame
    return Blame(first.party, first.role, first.path, f"{first.reason}; {consequence}")


def _attribute(samples: Samples, faults: tuple[Fault, ...]) -> tuple[list[tuple[Samples, tuple[Fault, ...]]], Samples]:
    """Split `samples` among the faults that cover them, the earliest fault first, grouped by blamed party.

    Returns the groups and the samples no fault covers. A fault of the whole
    call covers every sample; a whole-call failure is covered only by one.
    """
    groups: dict[tuple[str, Role, tuple[str, ...]], tuple[list[int] | None, list[Fault]]] = {}
    rest = samples
    for fault in faults:
        if rest == ():
            break
        covered, rest = _cover(rest, fault.samples)
        if covered == ():
            continue
        key = (fault.blame.party, fault.blame.role, fault.blame.path)
        if key in groups:
            group_samples, group_faults = groups[key]
            if group_samples is not None and covered is not None:
                group_samples += covered
            group_faults.append(fault)
        else:
            groups[key] = (None if covered is None else list(covered), [fault])
    return [
        (None if group_samples is None else tuple(sorted(group_samples)), tuple(group_faults))
        for group_samples, group_faults in groups.values()
    ], rest


def _cover(samples: Samples, covering: Samples) -> tuple[Samples, Samples]:
    """The part of `samples` that `covering` covers, and the rest."""
    if covering is None:
        return samples, ()
    if samples is None:
        return (), None
    inside = set(covering)
    return tuple(i for i in samples if i in inside), tuple(i for i in samples if i not in inside)


def for_statistical_vote(
    composition: str, clause: str, path: tuple[str, ...], failing_parts: tuple[tuple[str, str], ...],
) -> Blame:
    """A statistical clause of a vote: the parts whose own per-label clauses fail, else the composition."""
    if failing_parts:
        name, part_clause = failing_parts[0]
        others = ", ".join(f"`{n}`" for n, _ in failing_parts[1:])
        extra = f" (also failing: {others})" if others else ""
        return Blame(
            name, Role.MODULE, (*path, name),
            f"its own clause `{part_clause}` fails on the same data{extra}",
        )
    return Blame(
        composition, Role.COMPOSITION, path,
        f"every part keeps its per-label clauses, but the vote does not reach `{clause}`",
    )
