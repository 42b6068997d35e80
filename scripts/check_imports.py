#!/usr/bin/env python3
"""Fails when files under src/ import each other in a circle.

An edge is a `use crate::…`, `use super::…` or `use self::…` (or such a path written inline)
from one file to the file that defines the module it names. A parent's `mod child;` and its
relative `pub use child::…` re-exports are the module tree, not imports, and do not count.
Usage: scripts/check_imports.py [SRC_DIR]   (prints every cycle; exit 1 if there is one)
"""
import os, re, sys
root = sys.argv[1] if len(sys.argv) > 1 else 'src'
files = {}
for d, _, fs in os.walk(root):
    for f in fs:
        if f.endswith('.rs'):
            p = os.path.join(d, f)
            files[os.path.relpath(p, root)] = open(p).read()
def modpath(rel):
    parts = rel[:-3].split('/')
    if parts[-1] in ('mod', 'lib'): parts = parts[:-1]
    return parts
mods = {tuple(modpath(r)): r for r in files}
def resolve(cur, path):
    # cur: module path of the file (list); path: list of segments after use
    segs = list(path)
    if segs[0] == 'crate': base = []; segs = segs[1:]
    elif segs[0] == 'super':
        base = list(cur)
        while segs and segs[0] == 'super': base = base[:-1]; segs = segs[1:]
    elif segs[0] == 'self': base = list(cur); segs = segs[1:]
    else: return None
    # longest prefix that is a file module
    best = None
    for i in range(len(segs), -1, -1):
        t = tuple(base + segs[:i])
        if t in mods: best = mods[t]; break
    return best
edges = {}
pat = re.compile(r'\b((?:crate|super|self)(?:::\w+)+)')
for rel, src in files.items():
    cur = modpath(rel)
    src = re.sub(r'//.*', '', src)
    # expand use groups shallowly: use a::{b, c::d}
    for m in re.finditer(r'use\s+((?:crate|super|self)[^;]*);', src, re.S):
        u = m.group(1)
        g = re.match(r'(.*?)::\{(.*)\}$', u.replace('\n', ' '), re.S)
        items = [u]
        if g:
            items = [g.group(1) + '::' + x.strip().split(' ')[0] for x in re.split(r',(?![^{]*\})', g.group(2)) if x.strip()]
        for it in items:
            it = re.sub(r'::\{.*', '', it)
            t = resolve(cur, it.split('::'))
            if t and t != rel: edges.setdefault(rel, set()).add(t)
    for m in pat.finditer(src):
        t = resolve(cur, m.group(1).split('::'))
        if t and t != rel: edges.setdefault(rel, set()).add(t)
# Tarjan SCC
idx = {}; low = {}; st = []; on = set(); out = []; c = [0]
sys.setrecursionlimit(10000)
def sc(v):
    idx[v] = low[v] = c[0]; c[0] += 1; st.append(v); on.add(v)
    for w in edges.get(v, ()):
        if w not in idx: sc(w); low[v] = min(low[v], low[w])
        elif w in on: low[v] = min(low[v], idx[w])
    if low[v] == idx[v]:
        comp = []
        while True:
            w = st.pop(); on.discard(w); comp.append(w)
            if w == v: break
        if len(comp) > 1: out.append(sorted(comp))
for v in files:
    if v not in idx: sc(v)
for comp in out: print('cycle:', ' '.join(comp))
print(f'{len(files)} files, {sum(len(e) for e in edges.values())} edges, {len(out)} cycles')
sys.exit(1 if out else 0)
