#!/usr/bin/python3
"""Checks the shipped Grafana dashboard and Prometheus rules against the metrics the module renders.

Usage: check_monitoring.py [--root DIR] [--require-promtool] [--list-families]

A query that names a metric, a label or a label value the module does not render still
parses and simply draws nothing, so a rename in the module (relay_guard_streams_total's
outcome="failed" became error_event|upstream_cut|client_abort) breaks dashboards silently.
This fails instead:
  - nginx-conf/grafana-dashboard.json: valid JSON without duplicate keys, unique panel ids,
    panels that do not overlap, every panel, target and query variable on the one
    "datasource" variable, only defined $variables in queries;
  - nginx-conf/prometheus-alerts.yml: valid YAML without duplicate keys, every rule an alert
    (with severity, summary, description) or a record, unique names;
  - every query of both: each relay_guard_* metric is one the module renders (string literals
    of src/metrics/, outside tests) and one that FAMILIES below and the README's metrics table
    list, each label matcher and grouping label is one of the family's labels, and each value
    of an enumerated label (class, source, outcome, type, limit, kind) is a string literal of src/ outside
    tests;
  - with promtool on the PATH (Debian: apt-get install prometheus): `promtool check rules` on
    the rules and on every dashboard query (Grafana's variables replaced), and `promtool test
    rules scripts/prometheus-alerts.test.yml` (the alerts fire, and stay quiet, as intended).
    Without promtool those are skipped with a note, or fail with --require-promtool.
Prints one line per problem and exits 1, or a summary and exits 0. --list-families prints the
families the dashboard and rules use, one per line (for check_prometheus.py --require).
Needs PyYAML (Debian's python3-yaml, hence /usr/bin/python3).
"""
import argparse
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

try:
    import yaml
except ImportError:  # pragma: no cover - environment problem, not a check result
    sys.exit("check_monitoring: needs PyYAML (apt-get install python3-yaml; run it as scripts/check_monitoring.py)")

# The families of the README's metrics table and their labels. Prometheus adds `instance` and
# `job` to every series; histograms' _bucket series add `le`. Kept here as well as in the
# source so that a family added to one and not the other (or to the README) is noticed.
FAMILIES = {
    "relay_guard_requests_total": ("key", "class"),
    "relay_guard_responses_total": ("key", "status"),
    "relay_guard_errors_total": ("key", "source"),
    "relay_guard_auth_total": ("key", "outcome"),
    "relay_guard_streams_total": ("key", "outcome"),
    "relay_guard_stream_errors_total": ("key", "type"),
    "relay_guard_limited_total": ("key", "limit"),
    "relay_guard_redis_seconds": (),
    "relay_guard_redis_errors_total": ("kind",),
    "relay_guard_redis_fallbacks_total": (),
    "relay_guard_tokens_total": ("key", "model", "type"),
    "relay_guard_web_search_requests_total": ("key", "model"),
    "relay_guard_usage_responses_total": ("key", "model"),
    "relay_guard_bytes_received_total": ("key",),
    "relay_guard_bytes_sent_total": ("key",),
    "relay_guard_request_duration_seconds": ("key",),
    "relay_guard_upstream_connect_seconds": ("key",),
    "relay_guard_upstream_header_seconds": ("key",),
    "relay_guard_keys_tracked": (),
    "relay_guard_key_slots_max": (),
    "relay_guard_models_tracked": (),
    "relay_guard_model_slots_max": (),
}
HISTOGRAMS = {"relay_guard_request_duration_seconds", "relay_guard_upstream_connect_seconds",
              "relay_guard_upstream_header_seconds", "relay_guard_redis_seconds"}
TARGET_LABELS = ("instance", "job")
# Labels whose values are a fixed vocabulary spelled in the source; the others are key ids,
# model names, status numbers or bucket bounds.
ENUMERATED = {"class", "source", "outcome", "type", "limit", "kind"}
# Grafana's built-in variables, with a value for promtool.
GRAFANA_BUILTINS = {"__rate_interval": "5m", "__interval": "1m", "__range": "6h"}
SEVERITIES = {"critical", "warning", "info"}
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}

METRIC = re.compile(r"(?<![\w:])([a-zA-Z_][\w]*:[\w:]*|relay_guard_\w+)\s*(\{[^}]*\})?")
MATCHER = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')
GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
VARIABLE = re.compile(r"\$(?:\{(\w+)\}|(\w+))")
# Just enough of Rust's lexer to find string literals: comments, char literals ('"' would
# otherwise open a string), lifetimes, raw and byte strings.
RUST_TOKEN = re.compile(r"""//[^\n]*|/\*.*?\*/|b?r(#*)"(.*?)"\1|b?"((?:[^"\\]|\\.)*)"|b?'(?:\\.|[^\\'])'|'\w+|[^"'/br]+|.""", re.S)


class UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a mapping key given twice (PyYAML keeps the last silently)."""


def _unique_mapping(loader, node, deep=False):
    seen = set()
    for k, _ in node.value:
        key = loader.construct_object(k, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, "duplicate key %r" % (key,), k.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep)


UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def json_unique(pairs):
    d = {}
    for k, v in pairs:
        if k in d:
            raise ValueError("duplicate key %r" % k)
        d[k] = v
    return d


def non_test_source(path):
    """A Rust file's text before its `#[cfg(test)]` module (the file is skipped if it is a test file)."""
    if os.path.basename(path) in ("tests.rs",) or "/fuzz_checks/" in path:
        return ""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    return text.split("#[cfg(test)]", 1)[0]


def source_vocabulary(root):
    """(families rendered by src/metrics, every string literal of src/ outside tests)."""
    families, literals = set(), set()
    for path in glob.glob(os.path.join(root, "src", "**", "*.rs"), recursive=True):
        strings = [m.group(2) if m.group(1) is not None else m.group(3)
                   for m in RUST_TOKEN.finditer(non_test_source(path))
                   if m.group(1) is not None or m.group(3) is not None]
        literals.update(strings)
        if os.sep + os.path.join("src", "metrics") + os.sep in path:
            families.update(s for s in strings if re.fullmatch(r"relay_guard_\w+", s))
    return families, literals


def readme_families(path):
    """Families named in the first column of the README's metrics table (under "## Metrics")."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError:
        return set()
    section = text.split("\n## Metrics\n", 1)[-1].split("\n## ", 1)[0]
    out = set()
    for line in section.splitlines():
        if line.startswith("| `relay_guard_"):
            out.update(re.findall(r"`(relay_guard_\w+)`", line.split("|")[1]))
    return out


def family_of(name):
    """The documented family a series name belongs to, or None."""
    if name in FAMILIES:
        return name
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix) and name[: -len(suffix)] in HISTOGRAMS:
            return name[: -len(suffix)]
    return None


def check_expr(where, expr, literals, recorded, used):
    """Problems of one PromQL expression against the documented families and the source."""
    problems = []
    labels_in_expr = set(TARGET_LABELS)
    for m in METRIC.finditer(expr):
        name, sel = m.group(1), m.group(2) or ""
        if ":" in name:
            if name not in recorded:
                problems.append("%s: %s is no recording rule of the rules file" % (where, name))
            labels_in_expr.update(recorded.get(name, ()))
            continue
        fam = family_of(name)
        if fam is None:
            problems.append("%s: %s is not a documented relay_guard family" % (where, name))
            continue
        used.add(fam)
        allowed = set(FAMILIES[fam]) | set(TARGET_LABELS)
        if name.endswith("_bucket"):
            allowed.add("le")
        labels_in_expr |= allowed
        for label, op, value in MATCHER.findall(sel):
            if label not in allowed:
                problems.append("%s: %s has no label %r" % (where, name, label))
            elif label in ENUMERATED and "$" not in value:
                if not re.fullmatch(r"[\w|]+", value):
                    problems.append("%s: %s{%s%s\"%s\"}: only plain values or a|b alternatives can be checked"
                                    % (where, name, label, op, value))
                    continue
                for v in value.split("|"):
                    if v not in literals:
                        problems.append("%s: %s{%s=\"%s\"}: the module never renders %s=\"%s\""
                                        % (where, name, label, v, label, v))
    for _, group in GROUPING.findall(expr):
        for label in (l.strip() for l in group.split(",")):
            if label and label not in labels_in_expr:
                problems.append("%s: grouping label %r is no label of the series in this query" % (where, label))
    return problems


def walk_panels(panels):
    for p in panels:
        yield p
        yield from walk_panels(p.get("panels", []))


def check_dashboard(path, literals, recorded, used):
    """(problems, {where: expr with Grafana's variables replaced}) of the dashboard."""
    problems, exprs = [], {}
    try:
        with open(path, encoding="utf-8") as f:
            dash = json.load(f, object_pairs_hook=json_unique)
    except (OSError, ValueError) as e:
        return ["%s: %s" % (path, e)], {}
    name = os.path.basename(path)
    variables = {}
    for v in dash.get("templating", {}).get("list", []):
        variables[v.get("name")] = v
        if v.get("type") == "query":
            if v.get("datasource") != DATASOURCE:
                problems.append("%s: variable $%s: datasource is not %s" % (name, v.get("name"), DATASOURCE))
            q = v.get("query", {})
            q = q.get("query", "") if isinstance(q, dict) else q
            inner = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", q or "")
            if not inner:
                problems.append("%s: variable $%s: query %r is not label_values(SERIES, LABEL)" % (name, v.get("name"), q))
            else:
                problems += check_expr("%s: variable $%s" % (name, v.get("name")), inner.group(1), literals, recorded, used)
    ds = variables.get("datasource")
    if not ds or ds.get("type") != "datasource" or ds.get("query") != "prometheus":
        problems.append("%s: no datasource variable of type prometheus" % name)
    # A panel's datasource var is ${datasource}; every other $var must be defined or built in.
    values = {k: ".*" for k in variables}
    values.update(GRAFANA_BUILTINS)

    ids, boxes = {}, []
    for p in walk_panels(dash.get("panels", [])):
        pid, title = p.get("id"), p.get("title", "?")
        where = "%s: panel %s %r" % (name, pid, title)
        if pid in ids:
            problems.append("%s: id also used by %r" % (where, ids[pid]))
        ids[pid] = title
        g = p.get("gridPos", {})
        try:
            box = (int(g["x"]), int(g["y"]), int(g["w"]), int(g["h"]))
        except (KeyError, TypeError, ValueError):
            problems.append("%s: gridPos needs integer x, y, w, h" % where)
            box = None
        if box:
            x, y, w, h = box
            if x < 0 or w < 1 or h < 1 or x + w > 24:
                problems.append("%s: gridPos %s outside the 24-column grid" % (where, g))
            for other, obox in boxes:
                ox, oy, ow, oh = obox
                if x < ox + ow and ox < x + w and y < oy + oh and oy < y + h:
                    problems.append("%s: overlaps panel %r" % (where, other))
            boxes.append((title, box))
        if p.get("type") == "row":
            continue
        if p.get("datasource") != DATASOURCE:
            problems.append("%s: datasource is not %s" % (where, DATASOURCE))
        targets = p.get("targets") or []
        if not targets:
            problems.append("%s: no targets" % where)
        refs = set()
        for t in targets:
            ref = t.get("refId")
            twhere = "%s target %s" % (where, ref)
            if not ref or ref in refs:
                problems.append("%s: missing or repeated refId" % twhere)
            refs.add(ref)
            if t.get("datasource") != DATASOURCE:
                problems.append("%s: datasource is not %s" % (twhere, DATASOURCE))
            expr = t.get("expr") or ""
            if not expr.strip():
                problems.append("%s: empty expr" % twhere)
                continue
            for a, b in VARIABLE.findall(expr):
                if (a or b) not in values:
                    problems.append("%s: undefined variable $%s" % (twhere, a or b))
            problems += check_expr(twhere, expr, literals, recorded, used)
            exprs[twhere] = VARIABLE.sub(lambda m: values.get(m.group(1) or m.group(2), ".*"), expr)
    return problems, exprs


def load_rules(path):
    """(problems, parsed document) of the rules file."""
    try:
        with open(path, encoding="utf-8") as f:
            return [], yaml.load(f, Loader=UniqueKeyLoader)
    except (OSError, yaml.YAMLError) as e:
        return ["%s: %s" % (path, e)], None


def recorded_series(doc):
    """Recording rule name -> labels it keeps (from its outermost `by (...)`)."""
    out = {}
    for g in (doc or {}).get("groups", []) or []:
        for r in g.get("rules", []) or []:
            if isinstance(r, dict) and "record" in r:
                m = re.match(r"\s*\w+\s+by\s*\(([^)]*)\)", str(r.get("expr", "")))
                out[r["record"]] = tuple(l.strip() for l in m.group(1).split(",")) if m else ()
    return out


def check_rules(path, doc, literals, recorded, used):
    problems = []
    name = os.path.basename(path)
    groups = (doc or {}).get("groups") if isinstance(doc, dict) else None
    if not groups:
        return ["%s: no groups" % name]
    names = set()
    for g in groups:
        for r in g.get("rules") or []:
            rname = r.get("alert") or r.get("record")
            where = "%s: %s" % (name, rname)
            if ("alert" in r) == ("record" in r):
                problems.append("%s: a rule needs exactly one of alert and record" % where)
                continue
            if rname in names:
                problems.append("%s: name used twice" % where)
            names.add(rname)
            if not str(r.get("expr", "")).strip():
                problems.append("%s: no expr" % where)
                continue
            if "alert" in r:
                if (r.get("labels") or {}).get("severity") not in SEVERITIES:
                    problems.append("%s: labels.severity must be one of %s" % (where, sorted(SEVERITIES)))
                for a in ("summary", "description"):
                    if not (r.get("annotations") or {}).get(a):
                        problems.append("%s: no annotations.%s" % (where, a))
            problems += check_expr(where, str(r["expr"]), literals, recorded, used)
    return problems


def run_promtool(args, what):
    """Problems of one promtool run (its output when it fails)."""
    p = subprocess.run(["promtool"] + args, capture_output=True, text=True)
    if p.returncode == 0:
        return []
    out = [line for line in (p.stdout + p.stderr).splitlines() if line.strip()]
    return ["promtool %s: %s" % (what, line) for line in out[-40:]]


def promtool_checks(root, rules_path, exprs):
    problems = run_promtool(["check", "rules", rules_path], "check rules " + os.path.relpath(rules_path, root))
    with tempfile.TemporaryDirectory() as tmp:
        # promtool parses PromQL only inside rule files: one recording rule per dashboard query.
        doc = {"groups": [{"name": "dashboard", "rules": [
            {"record": "dashboard:query_%d" % i, "expr": e} for i, e in enumerate(exprs.values())]}]}
        dash_rules = os.path.join(tmp, "dashboard-queries.yml")
        with open(dash_rules, "w", encoding="utf-8") as f:
            yaml.safe_dump(doc, f)
        bad = run_promtool(["check", "rules", dash_rules], "check rules (dashboard queries)")
        if bad:
            problems += bad
            named = {int(i) for i in re.findall(r"dashboard:query_(\d+)", "\n".join(bad))}
            problems += ["dashboard:query_%d is %s: %s" % (i, w, e)
                         for i, (w, e) in enumerate(exprs.items()) if i in named]
    tests = os.path.join(root, "scripts", "prometheus-alerts.test.yml")
    problems += run_promtool(["test", "rules", tests], "test rules " + os.path.relpath(tests, root))
    return problems


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    here = os.path.dirname(os.path.abspath(__file__))
    p.add_argument("--root", default=os.path.dirname(here), help="the repository (default: this script's parent)")
    p.add_argument("--require-promtool", action="store_true", help="fail when promtool is not on the PATH")
    p.add_argument("--list-families", action="store_true", help="print the families the dashboard and rules use")
    a = p.parse_args()
    dash_path = os.path.join(a.root, "nginx-conf", "grafana-dashboard.json")
    rules_path = os.path.join(a.root, "nginx-conf", "prometheus-alerts.yml")

    rendered, literals = source_vocabulary(a.root)
    problems = []
    if not rendered:
        problems.append("no relay_guard_* family found in %s/src/metrics" % a.root)
    for fam in sorted(rendered - set(FAMILIES)):
        problems.append("src/metrics renders %s, which FAMILIES here (and the README's metrics table) lack" % fam)
    for fam in sorted(set(FAMILIES) - rendered):
        problems.append("%s is documented but src/metrics does not render it" % fam)

    documented = readme_families(os.path.join(a.root, "README.md"))
    for fam in sorted(set(FAMILIES) ^ documented):
        problems.append("%s is %s the README's metrics table but %s FAMILIES here"
                        % (fam, *(("in", "not in") if fam in documented else ("not in", "in"))))

    used = set()
    rp, doc = load_rules(rules_path)
    problems += rp
    recorded = recorded_series(doc)
    if doc is not None:
        problems += check_rules(rules_path, doc, literals, recorded, used)
    dp, exprs = check_dashboard(dash_path, literals, recorded, used)
    problems += dp

    if a.list_families:
        print("\n".join(sorted(used)))
        for pr in problems:
            print("check_monitoring: " + pr, file=sys.stderr)
        return 1 if problems else 0

    note = ""
    if shutil.which("promtool"):
        if doc is not None:
            problems += promtool_checks(a.root, rules_path, exprs)
        note = ", promtool check and test rules passed"
    elif a.require_promtool:
        problems.append("promtool is not on the PATH (Debian: apt-get install prometheus)")
    else:
        note = "; promtool not found: PromQL syntax and alert unit tests skipped (apt-get install prometheus)"

    if problems:
        for pr in problems:
            print("check_monitoring: " + pr, file=sys.stderr)
        return 1
    print("ok: %d dashboard queries and %d rules over %d families%s"
          % (len(exprs), sum(len(g.get("rules") or []) for g in doc["groups"]), len(used), note))
    return 0


if __name__ == "__main__":
    sys.exit(main())
