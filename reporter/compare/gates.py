"""Gates: ``--fail-on "accuracy<-0.01, ece>+0.02, sanity:fail, shortcut:new, drift>0.3"``.

The language (docs/compare.rst has the table):

- A list of gates separated by commas; each gate names a condition that **fails** the run.
- ``METRIC OP NUMBER``: ``OP`` is ``<``, ``<=``, ``>`` or ``>=``; ``NUMBER`` is a signed
  decimal, or a percentage (``-1%`` is ``-0.01``). Metrics (see :data:`METRICS`) are changes
  (new - old) on the shared images, except ``drift``, which is the drift itself.
- ``CHECK:STATE`` (see :data:`CHECKS`): ``sanity:fail`` (a method newly fails the
  randomization test), ``sanity:any``, ``shortcut:new`` (a class newly flagged),
  ``shortcut:any``, ``verdict:worse``, ``verdict:fail``.

A gate whose value cannot be measured (no shared maps for ``drift``, no finite output for
``ece``) fails, and says why: a gate that cannot look must not pass.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from reporter.errors import ReporterError

__all__ = ["CHECKS", "METRICS", "Gate", "evaluate_gates", "gate_help", "parse_gates"]

METRICS: dict[str, str] = {
    "accuracy": "change of accuracy on the shared images (new - old, a fraction)",
    "macro_f1": "change of macro F1 on the shared images",
    "ece": "change of the expected calibration error",
    "recall": "the largest drop of a class's recall (the most negative change)",
    "drift": "explanation drift, 1 - median rank correlation of old and new maps",
    "unmatched": "share of the new audit's images that the old one does not have",
}

CHECKS: dict[str, dict[str, str]] = {
    "sanity": {"fail": "a method newly fails the randomization test",
               "any": "a method fails the randomization test in the new audit"},
    "shortcut": {"new": "a class is newly flagged as a shortcut",
                 "any": "a class is flagged as a shortcut in the new audit"},
    "verdict": {"worse": "the audit verdict got worse", "fail": "the new verdict is fail"},
}  # fmt: skip

_OPS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le,
    ">=": operator.ge,
    "<": operator.lt,
    ">": operator.gt,
}
_TERM = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\s*(<=|>=|<|>|=+|!=)?\s*(.*)$")
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)%?$")


@dataclass(frozen=True)
class Gate:
    """One parsed gate: ``metric op limit`` or ``check:state``."""

    text: str
    name: str
    op: str | None = None
    limit: float | None = None
    state: str | None = None


def gate_help() -> str:
    """The valid metrics and checks, for error messages."""
    checks = ", ".join(f"{c}:{s}" for c, states in CHECKS.items() for s in states)
    return f"valid metrics: {', '.join(METRICS)} (with <, <=, >, >=); checks: {checks}"


def _bad(text: str, token: str, why: str) -> ReporterError:
    return ReporterError(f"--fail-on: {why} {token!r} in {text!r}; {gate_help()}.")


def parse_gates(expression: str) -> list[Gate]:
    """Parse a ``--fail-on`` expression.

    Raises:
        ReporterError: one line naming the bad token and listing the valid metrics.
    """
    gates = []
    for raw in expression.split(","):
        text = raw.strip()
        if not text:
            if expression.strip():
                raise ReporterError(f"--fail-on: an empty gate in {expression!r} (two commas, "
                                    f"or one at the end); {gate_help()}.")  # fmt: skip
            continue
        if ":" in text:
            check, _, state = (s.strip() for s in text.partition(":"))
            if check not in CHECKS:
                raise _bad(text, check, "unknown check")
            if state not in CHECKS[check]:
                raise _bad(text, state, f"unknown state of {check}:")
            gates.append(Gate(text, check, state=state))
            continue
        match = _TERM.match(text)
        if not match:
            raise _bad(text, text.split()[0] if text.split() else text, "cannot read")
        name, op, number = match.group(1), match.group(2), match.group(3).strip()
        if name not in METRICS:
            raise _bad(text, name, "unknown metric")
        if op is None:
            raise _bad(text, number or name, "expected an operator (<, <=, >, >=) after")
        if op not in _OPS:
            raise _bad(text, op, "unknown operator")
        if not _NUMBER.match(number):
            raise _bad(text, number, "expected a number, got")
        limit = float(number.rstrip("%")) / (100 if number.endswith("%") else 1)
        gates.append(Gate(text, name, op=op, limit=limit))
    return gates


def _metric(c: dict[str, Any], name: str) -> tuple[float | None, str]:
    m = c["metrics"]
    if name in ("accuracy", "macro_f1", "ece"):
        value = m[name]["delta"]
        return value, "" if value is not None else f"{name} is undefined in one audit"
    if name == "recall":
        deltas = [(r["delta"], r["class"]) for r in m["per_class"] if r["delta"] is not None]
        if not deltas:
            return None, "no class has images in both audits"
        worst = min(deltas)
        return worst[0], f"class \u201c{worst[1]}\u201d"
    if name == "drift":
        d = c["drift"]
        if d["value"] is None:
            return None, d.get("unavailable") or "no image kept its prediction"
        return d["value"], f"method {d['method']}"
    mt = c["matching"]
    return (mt["unmatched_new"] / mt["new_images"] if mt["new_images"] else None), ""


def _check(c: dict[str, Any], gate: Gate) -> list[str]:
    """What trips a check gate (empty: it passes)."""
    t, v = c["trust"], c["verdict"]
    if gate.name == "sanity":
        if gate.state == "fail":
            return [s["method"] for s in t["sanity"] if s["change"] == "newly failed"]
        return [s["method"] for s in t["sanity"] if s["new"] == "failed"]
    if gate.name == "shortcut":
        if gate.state == "new":
            return [s["class"] for s in t["shortcut"] if s["change"] == "new"]
        return [s["class"] for s in t["shortcut"] if s["new"]]
    if gate.state == "worse":
        return [f"{v['old']} -> {v['new']}"] if v["change"] == "worse" else []
    return [f"verdict {v['new']}"] if v["new"] == "fail" else []


def evaluate_gates(c: dict[str, Any], gates: list[Gate]) -> list[dict[str, Any]]:
    """Each gate's result: ``{"gate", "failed", "value", "limit", "by", "message"}``.

    ``by`` is how far past its limit a failed metric gate is (a positive number); for a
    check, ``value`` lists what tripped it.
    """
    out = []
    for g in gates:
        if g.state is not None:
            hits = _check(c, g)
            message = (
                f"gate {g.text} failed: {CHECKS[g.name][g.state]} ({', '.join(hits)})."
                if hits
                else f"gate {g.text} passed."
            )
            out.append({"gate": g.text, "failed": bool(hits), "value": hits, "limit": None,
                        "by": None, "message": message})  # fmt: skip
            continue
        assert g.op is not None and g.limit is not None
        value, where = _metric(c, g.name)
        if value is None:
            message = f"gate {g.text} failed: it cannot be measured ({where})."
            out.append({"gate": g.text, "failed": True, "value": None, "limit": g.limit,
                        "by": None, "message": message})  # fmt: skip
            continue
        failed = _OPS[g.op](value, g.limit)
        word = "is" if g.name in ("drift", "unmatched") else "changed by"
        at = f" ({where})" if where else ""
        if failed:
            by = abs(value - g.limit)
            message = (f"gate {g.text} failed: {g.name} {word} {value:+.4f}{at}, {by:.4f} past "
                       f"the limit {g.limit:+.4f}.")  # fmt: skip
        else:
            by = None
            message = f"gate {g.text} passed: {g.name} {word} {value:+.4f}{at}."
        out.append({"gate": g.text, "failed": failed, "value": value, "limit": g.limit,
                    "by": by, "message": message})  # fmt: skip
    return out
