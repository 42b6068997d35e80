#!/usr/bin/env python3
"""Validates a Prometheus text exposition (format 0.0.4) read from stdin.

Usage: check_prometheus.py [--require FAMILY ...] < scrape.txt

Parses the text with prometheus_client's own parser (so what Prometheus would reject, this
rejects), then checks what the parser does not: no series appears twice, counters are
non-negative, and every histogram series is sound (buckets sorted by `le` and cumulative, a
`+Inf` bucket equal to `_count`, a non-negative `_sum`). Exits 0 and prints a one-line summary
when all holds; exits 1 with one line per problem otherwise. Needs prometheus_client (in
target/venv, see scripts/setup).
"""
import argparse
import math
import sys

try:
    from prometheus_client.parser import text_string_to_metric_families
except ImportError:  # pragma: no cover - environment problem, not a validation result
    sys.exit("check_prometheus: prometheus_client is not installed (use target/venv/bin/python)")


def check(text, require=()):
    """Returns (problems, summary)."""
    problems = []
    try:
        families = list(text_string_to_metric_families(text))
    except Exception as e:  # the parser raises ValueError and friends on bad input
        return ["parse error: %s: %s" % (type(e).__name__, e)], ""

    seen = set()
    n_samples = 0
    for fam in families:
        for s in fam.samples:
            n_samples += 1
            ident = (s.name, tuple(sorted(s.labels.items())))
            if ident in seen:
                problems.append("duplicate series %s%s" % (s.name, dict(s.labels)))
            seen.add(ident)
            if math.isnan(s.value):
                problems.append("NaN value in %s%s" % (s.name, dict(s.labels)))
            if fam.type in ("counter", "histogram") and s.value < 0:
                problems.append("negative %s %s%s = %s" % (fam.type, s.name, dict(s.labels), s.value))
        if fam.type == "histogram":
            problems += check_histogram(fam)

    names = {f.name for f in families}
    for r in require:
        # The parser names a counter family without its _total suffix.
        if r not in names and not (r.endswith("_total") and r[:-6] in names):
            problems.append("missing family %s" % r)

    summary = "ok: %d families, %d samples" % (len(families), n_samples)
    return problems, summary


def check_histogram(fam):
    problems = []
    series = {}  # label set without le -> {"buckets": [(le, v)], "count": v, "sum": v}
    for s in fam.samples:
        labels = dict(s.labels)
        le = labels.pop("le", None)
        key = tuple(sorted(labels.items()))
        h = series.setdefault(key, {"buckets": [], "count": None, "sum": None})
        if s.name == fam.name + "_bucket":
            if le is None:
                problems.append("%s bucket without le %s" % (fam.name, labels))
                continue
            h["buckets"].append((float(le), s.value, le))
        elif s.name == fam.name + "_count":
            h["count"] = s.value
        elif s.name == fam.name + "_sum":
            h["sum"] = s.value
    for key, h in series.items():
        where = "%s%s" % (fam.name, dict(key))
        b = h["buckets"]
        if not b:
            problems.append("%s: no buckets" % where)
            continue
        les = [x[0] for x in b]
        if les != sorted(les) or len(set(les)) != len(les):
            problems.append("%s: le values not strictly increasing: %s" % (where, [x[2] for x in b]))
        for (le0, v0, s0), (le1, v1, s1) in zip(b, b[1:]):
            if v1 < v0:
                problems.append("%s: bucket le=%s (%s) < le=%s (%s): not cumulative" % (where, s1, v1, s0, v0))
        if not math.isinf(b[-1][0]):
            problems.append("%s: no +Inf bucket" % where)
        elif h["count"] is None:
            problems.append("%s: no _count" % where)
        elif b[-1][1] != h["count"]:
            problems.append("%s: +Inf bucket %s != _count %s" % (where, b[-1][1], h["count"]))
        if h["sum"] is None:
            problems.append("%s: no _sum" % where)
        elif h["sum"] < 0:
            problems.append("%s: negative _sum %s" % (where, h["sum"]))
    return problems


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--require", action="append", default=[], metavar="FAMILY",
                   help="fail unless this metric family is present (repeatable)")
    a = p.parse_args()
    text = sys.stdin.read()
    if not text.strip():
        print("check_prometheus: empty input", file=sys.stderr)
        return 1
    problems, summary = check(text, a.require)
    if problems:
        for pr in problems[:50]:
            print("check_prometheus: " + pr, file=sys.stderr)
        if len(problems) > 50:
            print("check_prometheus: ... and %d more" % (len(problems) - 50), file=sys.stderr)
        return 1
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
