"""Turn a pickle trace into findings: every global graded by the policy and by how the
pickle uses it; every gadget event on its own."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from mlscan.model import Finding, Rule
from mlscan.picklevm.machine import Trace
from mlscan.picklevm.names import normalize
from mlscan.picklevm.policy import Policy, Verdict
from mlscan.rulesets.model_files import (
    PICKLE_DANGEROUS_GLOBAL,
    PICKLE_DYNAMIC_CALL,
    PICKLE_MODEL_TAMPERING,
    PICKLE_UNKNOWN_CALL,
    PICKLE_UNKNOWN_CLASS,
    PICKLE_UNKNOWN_IMPORT,
)


@dataclass
class _Name:
    qualname: str
    offset: int
    uses: set[str] = field(default_factory=set)
    vias: set[str] = field(default_factory=set)


def _how(uses: set[str]) -> str:
    if "call" in uses:
        return "called"
    if "new" in uses:
        return "instantiated"
    if "arg" in uses:
        return "passed as data"
    return "imported"


def judge(trace: Trace, policy: Policy, path: str, member: str | None) -> Iterator[Finding]:
    names: dict[str, _Name] = {}
    for ref in trace.globals:
        q = normalize(ref.qualname)
        entry = names.get(q)
        if entry is None:
            entry = names[q] = _Name(q, ref.offset)
        entry.uses |= {u for u in ref.uses if not u.startswith("via:")}
        entry.vias |= {u[4:] for u in ref.uses if u.startswith("via:")}
        if ref.via not in ("GLOBAL", "STACK_GLOBAL", "INST"):
            entry.vias.add(ref.via)

    for entry in names.values():
        verdict, reason = policy.classify(entry.qualname)
        if verdict is Verdict.SAFE:
            continue
        via = f" via {', '.join(sorted(entry.vias))}" if entry.vias else ""
        how = _how(entry.uses)

        def emit(rule: Rule, message: str, entry: _Name = entry) -> Finding:
            return rule.finding(path, message, member=member, offset=entry.offset,
                                evidence=entry.qualname)

        if verdict is Verdict.DANGEROUS:
            yield emit(PICKLE_DANGEROUS_GLOBAL,
                       f"{entry.qualname} ({reason}) is {how}{via} when this pickle is loaded")
        elif verdict is Verdict.TAMPER:
            yield emit(PICKLE_MODEL_TAMPERING,
                       f"{entry.qualname} ({reason}) is {how}{via} while loading: the model "
                "is altered at load time")
        elif "call" in entry.uses:
            yield emit(PICKLE_UNKNOWN_CALL,
                       f"calls {entry.qualname}{via}, which is not a known data constructor")
        elif "new" in entry.uses:
            yield emit(PICKLE_UNKNOWN_CLASS,
                       f"rebuilds an instance of {entry.qualname} (needs its code to load; "
                "not loadable with weights_only=True)")
        else:
            yield emit(PICKLE_UNKNOWN_IMPORT,
                       f"imports {entry.qualname} ({how}), which is not allowlisted")

    seen: set[tuple[str, str]] = set()
    for event in trace.events:
        key = (event.kind, event.detail)
        if key in seen:
            continue
        seen.add(key)
        rule = PICKLE_MODEL_TAMPERING if event.kind == "tamper" else PICKLE_DYNAMIC_CALL
        yield rule.finding(path, event.detail, member=member, offset=event.offset,
                           evidence=event.target.qualname if event.target else event.detail)
