#!/usr/bin/env python3
"""Shares of named parts of a call-graph profile: the percentage of samples whose stack passes
through a part (inclusive; a sample counts once per part, however deep the part recurs) or
whose leaf is in it (self). Stacks through guest (JIT) code are cut short: perf cannot unwind
through it, so guest code is counted by its own samples.

    perf script -i perf.data --no-inline | bench/inclusive.py

Reads `perf script`'s default output (one header line per sample, then one indented frame per
line, leaf first). Used by bench/profile.sh when the profile has call stacks.
"""
import re
import sys

# (label, substrings of a frame's symbol or binary, where): "any" counts a sample when a frame
# anywhere in its stack matches (inclusive), "leaf" when its leaf does (self time).
PARTS = [
    ("kernel (self)", ["[kernel"], "leaf"),
    ("writev (inclusive: sends, with the loopback delivery inside)", ["__GI___writev"], "any"),
    ("stage instantiation", ["InstancePre<T>::instantiate_async"], "any"),
    ("  of it: bindings type-checking every export (GuestIndices::load)", ["GuestIndices::load"], "any"),
    ("stage teardown (store drop: pool reset, madvise)", ["drop_in_place<wasmtime::runtime::store::StoreInner"], "any"),
    ("stage calls from the host side (lowering, lifting)", ["TypedFunc<Params,Return>::call_impl"], "any"),
    ("guest code (self; WEIR_PERFMAP=1's /tmp/perf-PID.map)", ["/tmp/perf-"], "leaf"),
    ("moka caches (get + insert)", ["moka::sync::cache::Cache"], "any"),
    ("serde_json", ["serde_json::"], "any"),
    ("hyper (self)", ["hyper::", "hyper_util::"], "leaf"),
    ("allocator (self, mimalloc)", ["mi_malloc", "mi_free", "_mi_", "mi_theap"], "leaf"),
]

FRAME = re.compile(r"^\s+[0-9a-f]+ (.*?)(\+0x[0-9a-f]+)? \((.*)\)$")


def samples(lines):
    stack = []
    for line in lines:
        if line.startswith(("\t", " ")):
            m = FRAME.match(line.rstrip("\n"))
            if m:
                stack.append((m.group(1), m.group(3)))
        elif not line.strip():
            if stack:
                yield stack
            stack = []
    if stack:
        yield stack


def main():
    counts = [0] * len(PARTS)
    total = 0
    for stack in samples(sys.stdin):
        total += 1
        for i, (_, needles, where) in enumerate(PARTS):
            frames = stack[:1] if where == "leaf" else stack
            counts[i] += any(n in sym or n in dso for sym, dso in frames for n in needles)
    if not total:
        print("no samples with call stacks")
        return
    print(f"share of {total} samples:")
    for (label, _, _), n in zip(PARTS, counts):
        print(f"  {100 * n / total:5.1f}%  {label}")


if __name__ == "__main__":
    main()
