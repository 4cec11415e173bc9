"""The comparison of two bundles: matching, metric changes, confusion shifts, trust changes and
explanation drift. Every number of ``compare.json`` (except the gates) is computed here, from
the two bundles alone; :mod:`reporter.compare.findings` turns them into sentences.
"""

from __future__ import annotations

import datetime as _dt
from typing import Any

import numpy as np

from reporter.compare.load import Bundle
from reporter.compare.stats import bootstrap_delta, ece, macro_f1, mcnemar, spearman_rows

__all__ = ["COMPARE_VERSION", "LEVELS", "MOVED", "compare_bundles"]

COMPARE_VERSION = 1
"""Version of ``compare.json`` (docs/compare.rst lists the keys)."""

LEVELS = {"pass": 0, "review": 1, "fail": 2}
"""Audit verdict levels, best first (a higher number is worse)."""

MOVED = 6
"""How many of the most-moved images the comparison keeps (old and new map side by side)."""


def _side(b: Bundle) -> dict[str, Any]:
    m, model, data = b.audit["metrics"], b.audit.get("model") or {}, b.audit["dataset"]
    verdict = b.audit.get("verdict") or {}
    return {
        "path": str(b.path) if b.path is not None else None,
        "name": b.name,
        "report_id": b.report_id,
        "generated": b.generated,
        "model": {"arch": model.get("arch"), "sha256": model.get("sha256")},
        "dataset": {
            "name": data.get("name"),
            "fingerprint": data.get("fingerprint"),
            "audited_images": data.get("audited_images"),
        },
        "accuracy": m.get("accuracy"),
        "ece": m.get("ece"),
        "verdict": verdict.get("level"),
        "images": len(b.records["hash"]),
        "methods": b.methods,
    }


def _match(old: Bundle, new: Bundle) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """Row indices ``(io, jn)`` of the images both bundles hold (by content hash)."""
    ho, hn = old.records["hash"].astype(np.uint64), new.records["hash"].astype(np.uint64)
    uo, first_o = np.unique(ho, return_index=True)
    un, first_n = np.unique(hn, return_index=True)
    _, a, b = np.intersect1d(uo, un, assume_unique=True, return_indices=True)
    io, jn = first_o[a], first_n[b]
    order = np.argsort(jn, kind="stable")  # the new audit's order
    counts = {
        "old_images": len(ho),
        "new_images": len(hn),
        "matched": len(io),
        "unmatched_old": int(len(ho) - len(io) - (len(ho) - len(uo))),
        "unmatched_new": int(len(hn) - len(jn) - (len(hn) - len(un))),
        "duplicates_old": int(len(ho) - len(uo)),
        "duplicates_new": int(len(hn) - len(un)),
    }
    return io[order], jn[order], counts


def _classes(old: Bundle, new: Bundle) -> dict[str, Any]:
    co, cn = old.classes, new.classes
    shared = [c for c in cn if c in co]
    return {
        "old": co,
        "new": cn,
        "shared": shared,
        "only_old": [c for c in co if c not in cn],
        "only_new": [c for c in cn if c not in co],
        "same": co == cn,
    }


def _names(b: Bundle, key: str, rows: np.ndarray) -> np.ndarray:
    names = np.asarray([*b.classes, "?"], dtype=object)
    ids = b.records[key][rows].astype(np.int64)
    ids = np.where((ids >= 0) & (ids < len(b.classes)), ids, len(b.classes))
    return names[ids]


def _interval_side(value: float | None) -> float | None:
    return None if value is None else float(value)


def _delta(old: float | None, new: float | None) -> float | None:
    return None if old is None or new is None else float(new - old)


def compare_bundles(
    old: Bundle, new: Bundle, *, seed: int = 0, reps: int = 1000
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Compare two audits image by image.

    Args:
        old: The earlier audit.
        new: The later audit.
        seed: Seeds the bootstrap.
        reps: Bootstrap resamples (0: no intervals).

    Returns:
        ``(compare, arrays)``: the ``compare.json`` content (without findings and gates, see
        :func:`reporter.compare.findings.comparison_findings`) and the arrays of the
        most-moved images (``old_maps``, ``new_maps``: ``[k, 16, 16]`` float16).
    """
    rng = np.random.default_rng(seed)
    io, jn, counts = _match(old, new)
    classes = _classes(old, new)
    label_o, label_n = _names(old, "label", io), _names(new, "label", jn)
    agree = label_o == label_n
    counts["label_disagreements"] = int((~agree).sum())
    keep = agree & np.isin(label_n, classes["shared"])
    counts["outside_shared_classes"] = int((agree & ~keep).sum())
    io, jn, labels = io[keep], jn[keep], label_n[keep]
    counts["compared"] = len(io)
    counts["same_test_set"] = bool(
        counts["matched"] == counts["old_images"] == counts["new_images"]
        and counts["compared"] == counts["matched"]
    )
    pred_o, pred_n = _names(old, "pred", io), _names(new, "pred", jn)
    fin_o = old.records["finite"][io].astype(bool)
    fin_n = new.records["finite"][jn].astype(bool)
    right_o = (pred_o == labels) & fin_o
    right_n = (pred_n == labels) & fin_n
    conf_o = old.records["confidence"][io].astype(np.float64)
    conf_n = new.records["confidence"][jn].astype(np.float64)
    n = len(io)
    shared = classes["shared"]
    k = len(shared)
    lab = np.asarray([shared.index(c) for c in labels], np.int64)

    def to_ids(preds: np.ndarray) -> np.ndarray:
        lookup = {c: i for i, c in enumerate(shared)}
        return np.asarray([lookup.get(p, k) for p in preds], np.int64)

    pid_o, pid_n = to_ids(pred_o), to_ids(pred_n)
    metrics: dict[str, Any] = {"n": n}

    acc_o = float(right_o.mean()) if n else None
    acc_n = float(right_n.mean()) if n else None
    metrics["accuracy"] = {
        "old": acc_o,
        "new": acc_n,
        "delta": _delta(acc_o, acc_n),
        "interval": bootstrap_delta(
            lambda i: (float(right_o[i].mean()), float(right_n[i].mean())), n, rng, reps
        ),
        "mcnemar": mcnemar(int((right_o & ~right_n).sum()), int((~right_o & right_n).sum())),
    }

    def f1_pair(i: np.ndarray) -> tuple[float, float]:
        return macro_f1(lab[i], pid_o[i], k + 1), macro_f1(lab[i], pid_n[i], k + 1)

    f1_o, f1_n = f1_pair(np.arange(n)) if n else (None, None)
    metrics["macro_f1"] = {
        "old": f1_o,
        "new": f1_n,
        "delta": _delta(f1_o, f1_n),
        "interval": bootstrap_delta(f1_pair, n, rng, reps),
    }

    def ece_pair(i: np.ndarray) -> tuple[float | None, float | None]:
        fo, fn = fin_o[i], fin_n[i]
        return ece(conf_o[i][fo], right_o[i][fo]), ece(conf_n[i][fn], right_n[i][fn])

    e_o, e_n = ece_pair(np.arange(n))
    metrics["ece"] = {
        "old": e_o,
        "new": e_n,
        "delta": _delta(e_o, e_n),
        "interval": bootstrap_delta(ece_pair, n, rng, reps),
    }
    per_class = []
    for c, name in enumerate(shared):
        rows = np.flatnonzero(lab == c)
        r_o = float(right_o[rows].mean()) if len(rows) else None
        r_n = float(right_n[rows].mean()) if len(rows) else None
        ro, rn = right_o[rows], right_n[rows]

        def recall_pair(
            i: np.ndarray, ro: np.ndarray = ro, rn: np.ndarray = rn
        ) -> tuple[float, float]:
            return float(ro[i].mean()), float(rn[i].mean())

        per_class.append(
            {
                "class": name,
                "n": len(rows),
                "old": r_o,
                "new": r_n,
                "delta": _delta(r_o, r_n),
                "interval": bootstrap_delta(recall_pair, len(rows), rng, reps),
            }
        )
    metrics["per_class"] = per_class
    metrics["whole_test_sets"] = {
        "accuracy": {"old": old.audit["metrics"].get("accuracy"),
                     "new": new.audit["metrics"].get("accuracy")},
        "ece": {"old": old.audit["metrics"].get("ece"), "new": new.audit["metrics"].get("ece")},
    }  # fmt: skip

    drift, arrays = _drift(old, new, io, jn, labels, pid_o == pid_n, shared)
    result: dict[str, Any] = {
        "compare_version": COMPARE_VERSION,
        "generated": _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat(),
        "old": _side(old),
        "new": _side(new),
        "matching": counts,
        "classes": classes,
        "metrics": metrics,
        "confusion": _confusion(lab, pid_o, pid_n, shared),
        "verdict": _verdict_change(old, new),
        "trust": _trust_changes(old, new),
        "drift": drift,
        "settings": {"seed": seed, "bootstrap": reps, "interval": 0.95},
    }
    return result, arrays


def _confusion(lab: np.ndarray, pid_o: np.ndarray, pid_n: np.ndarray, shared: list[str]) -> dict:
    k = len(shared)
    size = (k + 1) * (k + 1)
    cm_o = np.bincount(lab * (k + 1) + pid_o, minlength=size).reshape(k + 1, k + 1)[:k]
    cm_n = np.bincount(lab * (k + 1) + pid_n, minlength=size).reshape(k + 1, k + 1)[:k]
    shifts: list[dict[str, Any]] = []
    for t in range(k):
        for p in range(k):
            if t == p or cm_o[t, p] == cm_n[t, p]:
                continue
            a, b = int(cm_o[t, p]), int(cm_n[t, p])
            kind = "appeared" if a == 0 else "vanished" if b == 0 else "grew" if b > a else "shrank"
            shifts.append({"true": shared[t], "pred": shared[p], "old": a, "new": b,
                           "delta": b - a, "kind": kind})  # fmt: skip
    shifts.sort(key=lambda s: (-abs(s["delta"]), s["true"], s["pred"]))
    return {
        "classes": shared,
        "old": cm_o[:, :k].tolist(),
        "new": cm_n[:, :k].tolist(),
        "other_old": cm_o[:, k].tolist(),
        "other_new": cm_n[:, k].tolist(),
        "shifts": shifts,
    }


def _verdict_change(old: Bundle, new: Bundle) -> dict[str, Any]:
    lo = (old.audit.get("verdict") or {}).get("level")
    ln = (new.audit.get("verdict") or {}).get("level")
    change = None
    if lo in LEVELS and ln in LEVELS:
        change = "same" if lo == ln else "worse" if LEVELS[ln] > LEVELS[lo] else "better"
    return {"old": lo, "new": ln, "change": change,
            "reasons_new": list((new.audit.get("verdict") or {}).get("reasons") or [])}  # fmt: skip


def _sanity_status(entry: Any) -> str | None:
    if not isinstance(entry, dict):
        return None
    if entry.get("status"):
        return str(entry["status"])
    if "passed" in entry:  # an early schema-2 layout
        return "passed" if entry["passed"] else "failed"
    return None


def trust_images(trust: dict[str, Any]) -> dict[str, int | None]:
    """Images each trust check ran on (``None`` where the audit does not say): the
    randomization test, deletion / insertion and the region search. A time budget
    (``trust.budget``) can make them differ between two audits of the same settings."""

    def count(value: Any) -> int | None:
        return (
            int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
        )

    return {
        "sanity": count(trust.get("sanity_images")),
        "faithfulness": count((trust.get("faithfulness") or {}).get("images")),
        "region": count((trust.get("shortcut_rules") or {}).get("region_images")),
    }


def _trust_changes(old: Bundle, new: Bundle) -> dict[str, Any]:
    to, tn = old.audit.get("trust") or {}, new.audit.get("trust") or {}
    so, sn = to.get("sanity") or {}, tn.get("sanity") or {}
    sanity = []
    for method in list(dict.fromkeys([*sn, *so])):
        a, b = _sanity_status(so.get(method)), _sanity_status(sn.get(method))
        change = (
            "same" if a == b
            else "newly failed" if b == "failed"
            else "no longer failed" if a == "failed"
            else "changed"
        )  # fmt: skip
        sanity.append({"method": method, "old": a, "new": b, "change": change})
    ho, hn = to.get("shortcut") or {}, tn.get("shortcut") or {}
    shortcut = []
    for cname in list(dict.fromkeys([*hn, *ho])):
        fo = bool((ho.get(cname) or {}).get("flagged")) if cname in ho else None
        fn = bool((hn.get(cname) or {}).get("flagged")) if cname in hn else None
        change = (
            "same" if fo == fn
            else "new" if fn and not fo
            else "gone" if fo and not fn
            else "changed"
        )  # fmt: skip
        shortcut.append({"class": cname, "old": fo, "new": fn, "change": change})
    io, inew = trust_images(to), trust_images(tn)
    differ = [c for c in io if io[c] is not None and inew[c] is not None and io[c] != inew[c]]
    return {
        "checked_old": bool(to),
        "checked_new": bool(tn),
        "sanity": sanity,
        "shortcut": shortcut,
        "images": {"old": io, "new": inew, "differ": differ},
    }


def _quartiles(rho: np.ndarray) -> dict[str, Any]:
    good = rho[np.isfinite(rho)]
    if len(good) == 0:
        return {"n": 0, "median": None, "q1": None, "q3": None, "min": None, "max": None}
    q1, med, q3 = np.percentile(good, [25, 50, 75])
    return {"n": len(good), "median": float(med), "q1": float(q1), "q3": float(q3),
            "min": float(good.min()), "max": float(good.max())}  # fmt: skip


def _drift(
    old: Bundle,
    new: Bundle,
    io: np.ndarray,
    jn: np.ndarray,
    labels: np.ndarray,
    same_pred: np.ndarray,
    shared: list[str],
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Rank correlation of old and new maps on images whose prediction did not change.

    Drift of a method = 1 - the median rho (0: the same ranking of regions; 1: unrelated).
    """
    layer_o = (old.audit.get("explanations") or {}).get("record_layer")
    layer_n = (new.audit.get("explanations") or {}).get("record_layer")
    maps_o, maps_n = old.records.get("maps"), new.records.get("maps")
    methods = [m for m in new.methods if m in old.methods]
    out: dict[str, Any] = {
        "stable_images": int(same_pred.sum()),
        "layer_old": layer_o,
        "layer_new": layer_n,
        "same_layer": layer_o == layer_n,
        "methods": {},
        "method": None,
        "value": None,
        "most_moved": [],
    }
    arrays: dict[str, np.ndarray] = {}
    if maps_o is None or maps_n is None or not methods or maps_o.shape[2:] != maps_n.shape[2:]:
        out["unavailable"] = (
            "no method is audited in both"
            if not methods
            else "the bundles hold no comparable per-image maps"
        )
        return out, arrays
    rows = np.flatnonzero(same_pred)
    if len(rows) == 0:
        out["unavailable"] = "no shared image kept its prediction"
        return out, arrays
    worst: tuple[float, str, np.ndarray] | None = None
    for m in methods:
        a = maps_o[io[rows], old.methods.index(m)]
        b = maps_n[jn[rows], new.methods.index(m)]
        rho = spearman_rows(a, b)
        q = _quartiles(rho)
        entry = {
            **q,
            "undefined": int((~np.isfinite(rho)).sum()),
            "drift": None if q["median"] is None else 1.0 - q["median"],
            "per_class": {c: _quartiles(rho[labels[rows] == c]) for c in shared},
        }
        out["methods"][m] = entry
        if entry["drift"] is not None and (worst is None or entry["drift"] > worst[0]):
            worst = (entry["drift"], m, rho)
    if worst is None:
        return out, arrays
    out["value"], out["method"] = worst[0], worst[1]
    rho = worst[2]
    finite = np.flatnonzero(np.isfinite(rho))
    picked = finite[np.argsort(rho[finite], kind="stable")[:MOVED]]
    mo, mn = old.methods.index(worst[1]), new.methods.index(worst[1])
    for r in picked:
        i, j = int(io[rows[r]]), int(jn[rows[r]])
        out["most_moved"].append(
            {
                "index_old": int(old.records["index"][i]),
                "index_new": int(new.records["index"][j]),
                "class": str(labels[rows[r]]),
                "pred": str(_names(new, "pred", np.asarray([j]))[0]),
                "rho": float(rho[r]),
            }
        )
    arrays["old_maps"] = np.stack([maps_o[io[rows[r]], mo] for r in picked]).astype(np.float16) \
        if len(picked) else np.zeros((0, *maps_o.shape[2:]), np.float16)  # fmt: skip
    arrays["new_maps"] = np.stack([maps_n[jn[rows[r]], mn] for r in picked]).astype(np.float16) \
        if len(picked) else np.zeros((0, *maps_n.shape[2:]), np.float16)  # fmt: skip
    return out, arrays
