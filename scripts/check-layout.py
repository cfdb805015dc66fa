#!/usr/bin/env python3
"""Checks two rules of docs/ARCHITECTURE.md for the node's crates:

- no import circle between the modules of a crate (a module that uses
  `crate::x` depends on `x`; test modules are ignored);
- no source file over 800 lines of code (blank and comment lines aside).

Usage: scripts/check-layout.py [CRATE_SRC_DIR ...]
(default: crates/tailnet/src crates/tailnet-engine/src). Exits 1 naming
the circle or the file.
"""
import re
import sys
from pathlib import Path

MAX_CODE_LINES = 800


def non_test(text: str) -> str:
    """The file without its `#[cfg(test)] mod … {` (always last here);
    a `#[cfg(test)]` on a single item leaves the rest counted."""
    m = re.search(r"#\[cfg\(test\)\]\s*mod\s+\w+\s*\{", text)
    return text if m is None else text[: m.start()]


def code_lines(text: str) -> int:
    return sum(
        1 for line in text.splitlines() if line.strip() and not line.strip().startswith("//")
    )


def module_of(src: Path, path: Path) -> str:
    rel = path.relative_to(src).parts
    return rel[0].removesuffix(".rs")


def cycles(graph: dict) -> list:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def check(src: Path) -> list:
    problems = []
    graph = {}
    for path in sorted(src.rglob("*.rs")):
        text = path.read_text()
        n = code_lines(text)
        if n > MAX_CODE_LINES:
            problems.append(f"{path}: {n} lines of code (over {MAX_CODE_LINES}); split it")
        m = module_of(src, path)
        body = non_test(text)
        deps = set(re.findall(r"crate::([a-z_][a-z0-9_]*)", body))
        for group in re.findall(r"crate::\{([^}]*)\}", body):
            deps.update(re.findall(r"(?:^|,)\s*([a-z_][a-z0-9_]*)::", group))
        graph.setdefault(m, set()).update(d for d in deps if d != m)
    for comp in cycles(graph):
        problems.append(f"{src}: modules import each other in a circle: {', '.join(comp)}")
    return problems


def main() -> int:
    dirs = [Path(a) for a in sys.argv[1:]] or [
        Path("crates/tailnet/src"),
        Path("crates/tailnet-engine/src"),
    ]
    problems = [p for d in dirs for p in check(d)]
    for p in problems:
        print(p, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
