#!/usr/bin/env python3
"""Ratio table for `cargo bench --bench reactor`.

Reads criterion's estimates (TARGET/criterion/GROUP/FUNCTION/new/estimates.json)
for the groups the reactor bench writes and prints, per group, the mean time
of caploop, raw polling and calloop and the ratios caploop/polling and
caploop/calloop (above 1 means caploop is slower). Medians are printed too,
since a shared machine's outliers move the mean.

    python3 benches/ratios.py [TARGET_DIR]      (default: $CARGO_TARGET_DIR or target)
"""

import json
import os
import sys

GROUPS = ["pingpong", "idle1000", "timers100k", "timers100k_burst"]
IMPLS = ["caploop", "polling", "calloop"]


def estimate(root, group, impl, stat):
    path = os.path.join(root, group, impl, "new", "estimates.json")
    try:
        with open(path) as f:
            return json.load(f)[stat]["point_estimate"]
    except (OSError, KeyError, ValueError):
        return None


def fmt_time(ns):
    if ns is None:
        return "-"
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("us", 1e3)):
        if ns >= scale:
            return "%.3f %s" % (ns / scale, unit)
    return "%.1f ns" % ns


def fmt_ratio(a, b):
    if a is None or b is None or b == 0:
        return "-"
    return "%.3f" % (a / b)


def table(root, stat):
    head = ["group"] + IMPLS + ["caploop/polling", "caploop/calloop"]
    rows = []
    for g in GROUPS:
        t = {i: estimate(root, g, i, stat) for i in IMPLS}
        if all(v is None for v in t.values()):
            continue
        rows.append(
            [g]
            + [fmt_time(t[i]) for i in IMPLS]
            + [fmt_ratio(t["caploop"], t["polling"]), fmt_ratio(t["caploop"], t["calloop"])]
        )
    if not rows:
        return False
    widths = [max(len(r[c]) for r in [head] + rows) for c in range(len(head))]
    line = lambda r: "  ".join(r[c].ljust(widths[c]) for c in range(len(r))).rstrip()
    print("%s (per iteration: one round trip for pingpong/idle1000, "
          "100,000 timers scheduled and fired for timers*)" % stat)
    print(line(head))
    print(line(["-" * w for w in widths]))
    for r in rows:
        print(line(r))
    print()
    return True


def main():
    target = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("CARGO_TARGET_DIR", "target")
    root = os.path.join(target, "criterion")
    found = table(root, "mean")
    table(root, "median")
    if not found:
        sys.exit("no estimates under %s; run `cargo bench --bench reactor` first" % root)


if __name__ == "__main__":
    main()
