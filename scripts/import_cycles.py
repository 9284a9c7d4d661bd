#!/usr/bin/env python3
"""Import cycles between the library's modules (files), from their `crate::`
and `super::` paths: prints each cycle and exits 1 if there is one. The
command line (`app`) and the Python module sit above everything and are
left out. CI runs it: `python3 scripts/import_cycles.py src`."""
import re, os, sys
root=sys.argv[1]
files={}
for dp,dn,fn in os.walk(root):
    for f in fn:
        if f.endswith('.rs'):
            p=os.path.join(dp,f); files[p]=open(p).read()
def modpath(p):
    rel=p[len(root)+1:-3]; parts=rel.split('/')
    if parts[-1]=='mod': parts=parts[:-1]
    if parts in (['lib'],['main']): return []
    return parts
mods={tuple(modpath(p)):p for p in files}
def resolve(path):
    for n in range(len(path),0,-1):
        if tuple(path[:n]) in mods: return tuple(path[:n])
edges={}
for p,s in files.items():
    me=tuple(modpath(p))
    if me and me[0] in ('app','python'): continue
    s=re.sub(r'#\[cfg\(test\)\]\s*mod tests \{.*', '', s, flags=re.S)
    out=set()
    for m in re.finditer(r'crate::([a-z_:]+)', s):
        r=resolve([x for x in m.group(1).split('::') if x])
        if r and r!=me: out.add(r)
    for m in re.finditer(r'\bsuper::([a-z_:]+)', s):
        r=resolve(list(me[:-1])+[x for x in m.group(1).split('::') if x])
        if r and r!=me: out.add(r)
    edges[me]=out
cycles=set()
def dfs(n, stack):
    for m in edges.get(n,()):
        if m in stack:
            c=stack[stack.index(m):]; k=min(range(len(c)),key=lambda i:c[i]); c=c[k:]+c[:k]
            cycles.add(tuple('::'.join(x) for x in c))
        elif len(stack)<12: dfs(m, stack+[m])
for n in edges: dfs(n,[n])
for c in sorted(cycles)[:30]: print(' -> '.join(c))
print(len(cycles),'cycles')
sys.exit(1 if cycles else 0)
