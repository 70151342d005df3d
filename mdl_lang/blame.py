"""The blame rules of LANGUAGE.md section 7: exactly one party per failure.

Findler and Felleisen's contracts assign a `requires` to the party that
supplied the value and an `ensures` to the party that produced it. In a
composition the supplier of an inner module's input is the upstream part,
or the caller when the input is the composition's own. These functions only
decide; backends tell them what failed and what held.
"""

from __future__ import annotations

from dataclasses import dataclass

from mdl_lang.report import Blame, Role


@dataclass(frozen=True)
class Upstream:
    """Who supplied a module's input: the caller, or a part whose ensures did or did not hold.

    `failed_ensures` names the upstream part's ensures that failed on the
    samples in question (empty when they all held).
    """

    party: str
    path: tuple[str, ...]
    is_caller: bool
    composition: str | None = None
    failed_ensures: tuple[str, ...] = ()


def caller(path: tuple[str, ...] = ()) -> Upstream:
    return Upstream("caller", path, True)


def part(name: str, path: tuple[str, ...], composition: str, failed_ensures: tuple[str, ...]) -> Upstream:
    return Upstream(name, path, False, composition, failed_ensures)


def for_requires(module: str, clause: str, module_path: tuple[str, ...], upstream: Upstream) -> Blame:
    """A `requires` of `module` failed: blame whoever supplied its input."""
    if upstream.is_caller:
        where = f"`{module}`" if len(module_path) <= 1 else f"`{module}` (through {' > '.join(module_path[:-1])})"
        return Blame("caller", Role.CALLER, module_path, f"the data given to {where} breaks its requires `{clause}`")
    if upstream.failed_ensures:
        broken = ", ".join(f"`{name}`" for name in upstream.failed_ensures)
        return Blame(
            upstream.party, Role.MODULE, upstream.path,
            f"its ensures {broken} failed, and `{module}` received that output (requires `{clause}` failed)",
        )
    composition = upstream.composition or module
    return Blame(
        composition, Role.COMPOSITION, module_path,
        f"`{upstream.party}` kept all its ensures, but they do not establish `{module}`'s requires `{clause}`: "
        "the parts do not fit",
    )


def for_ensures(module: str, clause: str, module_path: tuple[str, ...]) -> Blame:
    """An `ensures` failed while the module's requires held: the module is at fault."""
    return Blame(module, Role.MODULE, module_path, f"ensures `{clause}` failed while its requires held")


def for_ensures_after_bad_input(module: str, clause: str, module_path: tuple[str, ...], upstream: Upstream) -> Blame:
    """An `ensures` failed on input that already broke the module's requires: the supplier is at fault."""
    blame = for_requires(module, clause, module_path, upstream)
    return Blame(blame.party, blame.role, blame.path, f"{blame.reason}; the ensures `{clause}` then failed too")


def for_composition_ensures(
    composition: str, clause: str, path: tuple[str, ...], failed_parts: tuple[tuple[str, tuple[str, ...]], ...],
) -> Blame:
    """A composition's own `ensures` failed: a part that broke its contract, else the composition."""
    if failed_parts:
        name, part_path = failed_parts[0]
        return Blame(
            name, Role.MODULE, part_path,
            f"its contract failed inside `{composition}`, whose ensures `{clause}` then failed",
        )
    return Blame(
        composition, Role.COMPOSITION, path,
        f"every part kept its contract, but together they do not establish `{clause}`",
    )


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
