#!/usr/bin/env python3
"""Where a variant's extra front CPU goes: the profiles `scripts/bench --perf DIR` recorded,
as CPU time per completed request, for two variants side by side and their difference.

    scripts/bench_perf.py --dir DIR [--results target/bench/results.tsv] [--base signature-1k]
                          [--variant redis-on] [--top 40] [--process front|redis]

Each sample is charged to the syscall it was taken in (the outermost __x64_sys_* frame of its
kernel stack: on loopback the sender's syscall also runs the receiver's TCP input in softirq),
else to the kernel function that took it outside any syscall, else to the user-space function
(and library) it was in. Time is the samples' period (cpu-clock: nanoseconds), summed over
the rounds and divided by the rounds' completed requests (results.tsv). --process redis reads
the redis-server profiles recorded during the variant's runs (the base then has none).
"""

import argparse
import collections
import glob
import os
import re
import subprocess
import sys

SYS = re.compile(r"^(?:__x64_sys_|__do_sys_|__se_sys_)(\w+)$")


def requests_of(results, name):
    """{round: completed requests} of variant `name`."""
    out = {}
    with open(results) as f:
        for line in f:
            cols = line.rstrip("\n").split("\t")
            if cols[0] == name:
                out[cols[12]] = int(cols[3])
    return out


def category(frames):
    """frames: [(sym, dso)] innermost first."""
    sysname = None
    kernel_outer = None
    inner = None
    for sym, dso in frames:
        if dso == "[kernel.kallsyms]":
            if sym == "do_syscall_64" and not sysname and inner:
                # A syscall entered by a tail call (do_writev): named by its first function.
                sysname = SYS.sub(r"\1", inner)
            kernel_outer = sym
            m = SYS.match(sym)
            if m:
                sysname = m.group(1)
            inner = sym
    if sysname:
        return "sys:" + sysname
    sym, dso = frames[0]
    if dso == "[kernel.kallsyms]":
        return "kernel:" + (kernel_outer or sym)
    return "%s:%s" % (lib(dso), sym)


def lib(dso):
    """A library's short name; the module's, whatever its file is called (A and B may differ)."""
    if dso == "[kernel.kallsyms]":
        return "kernel"
    base = os.path.basename(dso)
    return "module" if base.endswith(".so") and not base.startswith("lib") else base


def profile(path):
    """{category: ns}, {dso: ns} of one perf.data file."""
    cats = collections.Counter()
    dsos = collections.Counter()
    out = subprocess.run(
        ["perf", "script", "-i", path, "-F", "period,ip,sym,dso"],
        capture_output=True, text=True, check=True,
    ).stdout
    period, frames = 0, []

    def flush():
        if frames:
            cats[category(frames)] += period
            dsos[lib(frames[0][1])] += period

    for line in out.splitlines():
        if not line.strip():
            continue
        if not line.startswith("\t"):
            flush()
            period, frames = int(line.split()[0]), []
            continue
        m = re.match(r"\s*[0-9a-f]+ (.*) \((.*)\)$", line)
        if m:
            sym = re.sub(r"\+0x[0-9a-f]+$", "", m.group(1))
            frames.append((sym, m.group(2)))
    flush()
    return cats, dsos


def per_request(directory, results, name, prefix):
    reqs = requests_of(results, name)
    cats, dsos, n = collections.Counter(), collections.Counter(), 0
    for path in sorted(glob.glob(os.path.join(directory, "%s%s.r*.data" % (prefix, name)))):
        rnd = re.search(r"\.r(\d+)\.data$", path).group(1)
        if rnd not in reqs:
            sys.exit("no results for %s round %s in %s" % (name, rnd, results))
        c, d = profile(path)
        cats.update(c)
        dsos.update(d)
        n += reqs[rnd]
    if n == 0:
        return {}, {}, 0
    return ({k: v / n for k, v in cats.items()}, {k: v / n for k, v in dsos.items()}, n)


def table(title, a, b, an, bn, top):
    keys = sorted(set(a) | set(b), key=lambda k: -abs(b.get(k, 0) - a.get(k, 0)))
    print("\n%s (ns per request; A = %s, B = %s)" % (title, an, bn))
    print("%10s %10s %10s  %s" % ("A", "B", "B-A", "where"))
    for k in keys[:top]:
        print("%10.0f %10.0f %+10.0f  %s" % (a.get(k, 0), b.get(k, 0), b.get(k, 0) - a.get(k, 0), k))
    print("%10.0f %10.0f %+10.0f  (total)" % (sum(a.values()), sum(b.values()),
                                               sum(b.values()) - sum(a.values())))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", required=True)
    ap.add_argument("--results", default=os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "target", "bench", "results.tsv"))
    ap.add_argument("--base", default="signature-1k")
    ap.add_argument("--variant", default="redis-on")
    ap.add_argument("--top", type=int, default=40)
    ap.add_argument("--process", choices=["front", "redis"], default="front")
    args = ap.parse_args()
    prefix = "redis-" if args.process == "redis" else ""
    a, ad, an = per_request(args.dir, args.results, args.base, prefix)
    b, bd, bn = per_request(args.dir, args.results, args.variant, prefix)
    if bn == 0:
        sys.exit("no profiles of %s in %s" % (args.variant, args.dir))
    label_a = "%s (%d requests)" % (args.base, an) if an else "nothing"
    label_b = "%s (%d requests)" % (args.variant, bn)
    table("By library", ad, bd, label_a, label_b, args.top)
    table("By syscall / function", a, b, label_a, label_b, args.top)


if __name__ == "__main__":
    main()
