#!/usr/bin/env python3
"""Writes a DEP-5 copyright file for the .so: relay-guard itself plus every crate linked into it.

Linked = reachable from the relay-guard package over normal (not build, not dev) dependency
edges, proc-macro crates excluded (they run in the compiler, no code of theirs is in the .so).
Input: `cargo metadata --format-version 1 --offline --features nginx` on stdin; RG_COPYRIGHT_YEARS
(e.g. 2025-2026, from git) goes before relay-guard's own authors."""
import json, os, re, sys

meta = json.load(sys.stdin)
pkgs = {p["id"]: p for p in meta["packages"]}
nodes = {n["id"]: n for n in meta["resolve"]["nodes"]}
root = meta["resolve"]["root"]
seen, todo = set(), [root]
while todo:
    i = todo.pop()
    if i in seen:
        continue
    seen.add(i)
    for d in nodes[i]["deps"]:
        if any(k["kind"] is None for k in d["dep_kinds"]):
            todo.append(d["pkg"])

def is_proc_macro(p):
    return any("proc-macro" in t["kind"] for t in p["targets"])

def dep5(expr):
    expr = (expr or "UNKNOWN").replace("/", " OR ")
    return re.sub(r"\b(OR|AND|WITH)\b", lambda m: m.group(1).lower(), expr)

me = pkgs[root]
out = ["Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/",
       "Upstream-Name: relay-guard", "Source: %s" % (me.get("repository") or "relay-guard"), "",
       "Files: *", "Copyright: %s %s" % (os.environ.get("RG_COPYRIGHT_YEARS", ""), "; ".join(me["authors"]) or "relay-guard authors"),
       "License: %s" % dep5(me["license"]), ""]
names = set(re.split(r" (?:or|and) ", dep5(me["license"])))
for i in sorted(seen - {root}, key=lambda i: (pkgs[i]["name"], pkgs[i]["version"])):
    p = pkgs[i]
    if is_proc_macro(p):
        continue
    lic = dep5(p["license"])
    names.update(re.split(r" (?:or|and) ", lic.strip("()")))
    out += ["Files: rust-crates/%s-%s/*" % (p["name"], p["version"]),
            "Copyright: %s" % ("; ".join(a.replace("\n", " ") for a in p["authors"]) or "the %s authors" % p["name"]),
            "License: %s" % lic,
            "Comment: Rust crate %s %s, statically linked into ngx_http_relay_guard_module.so" % (p["name"], p["version"]), ""]
common = {"Apache-2.0": "/usr/share/common-licenses/Apache-2.0", "GPL-2.0": "/usr/share/common-licenses/GPL-2"}
for n in sorted(x.strip("() ") for x in names):
    ref = common.get(n)
    out += ["License: %s" % n,
            " %s" % ("The full text is in %s." % ref if ref else
                     "See the licence text shipped with each crate using it (https://spdx.org/licenses/%s.html)." % n.split(" with ")[0]),
            ""]
sys.stdout.write("\n".join(out))
