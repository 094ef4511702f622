#!/usr/bin/env python3
"""Fails when a module of a crate imports one that imports it back, or a
file of the node (under node/) is over 800 lines: the node's architecture
rules (one module per concern, no import cycles between them).

Usage: scripts/lib/module_cycles.py SRC_DIR...

It reads `use crate::…`, `use super::…`, `use self::…` (and `crate::` paths
in code), resolves each to the longest module path that exists, and reports
every pair of modules that use each other. Test modules (`#[cfg(test)] mod
tests { … }`, and `tests.rs` files) do not count.
"""

import os
import re
import sys

MAX_LINES = 800


def modules(root):
    mods = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            if not name.endswith(".rs"):
                continue
            path = os.path.join(dirpath, name)
            parts = os.path.relpath(path, root)[:-3].split(os.sep)
            if parts[-1] in ("mod", "lib", "main"):
                parts = parts[:-1]
            if parts and parts[-1] == "tests":
                continue
            mods["::".join(parts)] = (path, open(path, encoding="utf-8").read())
    return mods


def expand(use):
    match = re.match(r"^(.*?)::\{(.*)\}$", use)
    if not match:
        return [use]
    prefix, body = match.groups()
    items, depth, current = [], 0, ""
    for ch in body:
        depth += ch == "{"
        depth -= ch == "}"
        if ch == "," and depth == 0:
            items.append(current)
            current = ""
        else:
            current += ch
    if current:
        items.append(current)
    return [e for item in items for e in expand(prefix + "::" + item)]


def resolve(mods, current, path):
    segs = path.split("::")
    base = current.split("::") if current else []
    if segs[0] == "crate":
        base, segs = [], segs[1:]
    elif segs[0] == "self":
        segs = segs[1:]
    elif segs[0] == "super":
        while segs and segs[0] == "super":
            base, segs = base[:-1], segs[1:]
    else:
        return None
    full = base + segs
    for i in range(len(full), 0, -1):
        name = "::".join(full[:i])
        if name in mods:
            return name
    return None


def main(roots):
    failed = False
    for root in roots:
        mods = modules(root)
        edges = set()
        for name, (path, text) in mods.items():
            lines = text.count("\n")
            if lines > MAX_LINES and os.path.normpath(root).startswith("node"):
                print(f"{path}: {lines} lines (at most {MAX_LINES})")
                failed = True
            code = re.split(r"#\[cfg\(test\)\]\s*mod tests\s*\{", text)[0]
            code = re.sub(r"//[^\n]*", "", code)
            uses = re.findall(r"\buse\s+((?:crate|super|self)[^;]*);", code, re.S)
            paths = [u for use in uses for u in expand(re.sub(r"\s+", "", use))]
            paths += re.findall(r"\b(crate::[a-z_:]+[a-z_])", code)
            for p in paths:
                target = resolve(mods, name, p.split(" as ")[0])
                if target and target != name:
                    edges.add((name, target))
        for a, b in sorted(edges):
            if a < b and (b, a) in edges:
                print(f"{root}: `{a or 'crate'}` and `{b or 'crate'}` import each other")
                failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
