#!/usr/bin/env python3
"""Checks that no crate in the workspace has an import cycle between its modules.

For every library crate (`<crate>/src/lib.rs`) the script maps each source file to its module
path (`lib.rs` is the root, `foo.rs` and `foo/mod.rs` are `foo`, `foo/bar.rs` is `foo::bar`),
reads the `crate::…` and `super::…` paths in its code (comments, doc comments and `#[cfg(test)]`
modules are left out: they do not shape the build), and draws an edge from the module to the
module that path names. An edge between a module and its own ancestor or descendant is the
module tree itself, not an import, and is left out. Any strongly connected set of two or more
modules is a cycle: the script prints it and exits 1. `--graph` prints the edges; `--root DIR` checks another checkout.
The root counts as a module: it depends on the blocks it assembles, so a block that names an
item through the root (`crate::Item`) closes a cycle.
"""
import re
import sys
from pathlib import Path

from crate_report import Finding, report, run

ROOT = Path(__file__).resolve().parent.parent
CRATES = ["pod-identity-core", "pod-identity-provider", "pod-identity-agent-lib"]
PATH_RE = re.compile(r"\b(crate|super)((?:::[A-Za-z_][A-Za-z0-9_]*)+)")
USE_GROUP_RE = re.compile(r"\buse\s+(crate|super)((?:::[A-Za-z_][A-Za-z0-9_]*)*)::\{([^;]*)\};", re.S)


def module_of(src: Path, file: Path) -> tuple:
    rel = file.relative_to(src).with_suffix("")
    parts = list(rel.parts)
    if parts == ["lib"]:
        return ()
    if parts[-1] == "mod":
        parts = parts[:-1]
    return tuple(parts)


def strip_code(text: str) -> str:
    """The file's code without comments and without `#[cfg(test)]` modules."""
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    lines = []
    skip_depth = None
    depth = 0
    pending_test = False
    for line in text.splitlines():
        code = re.sub(r"//.*", "", line)
        stripped = code.strip()
        if skip_depth is None:
            if stripped.startswith("#[cfg(test)]"):
                pending_test = True
                continue
            if pending_test and re.match(r"(pub(\([^)]*\))?\s+)?mod\s+\w+\s*\{", stripped):
                skip_depth = depth
                depth += code.count("{") - code.count("}")
                pending_test = False
                continue
            pending_test = False if stripped and not stripped.startswith("#") else pending_test
            lines.append(code)
            depth += code.count("{") - code.count("}")
        else:
            depth += code.count("{") - code.count("}")
            if depth <= skip_depth:
                skip_depth = None
    return "\n".join(lines)


def resolve(modules: set, here: tuple, head: str, tail: list) -> tuple:
    base = () if head == "crate" else here[:-1]
    names = list(tail)
    while names and names[0] == "super":
        base = base[:-1]
        names.pop(0)
    best = base
    for i in range(1, len(names) + 1):
        candidate = base + tuple(names[:i])
        if candidate in modules:
            best = candidate
        else:
            break
    return best


def related(a: tuple, b: tuple) -> bool:
    """Whether one module contains the other. The crate root is the exception: a module that
    names an item defined (or re-exported) at the root depends on the root, and the root depends
    on the modules it assembles."""
    if not a or not b:
        return False
    return a[: len(b)] == b or b[: len(a)] == a


def graph_of(crate: str) -> dict:
    src = ROOT / crate / "src"
    files = {module_of(src, f): f for f in src.rglob("*.rs")}
    modules = set(files)
    edges = {m: set() for m in modules}
    for here, file in files.items():
        code = strip_code(file.read_text())
        refs = []
        for head, prefix, group in USE_GROUP_RE.findall(code):
            for item in re.split(r",", group):
                item = item.strip().split(" as ")[0].strip()
                if item and item != "self" and re.match(r"^[A-Za-z_][\w:]*$", item):
                    refs.append((head, prefix + "::" + item))
                elif item == "self":
                    refs.append((head, prefix))
        for head, path in PATH_RE.findall(code):
            refs.append((head, path))
        if here == ():
            # The root names its modules without `crate::` (`use cache::X`, `cache::X::new()`);
            # `mod` declarations and `pub use` re-exports are the module tree, not use.
            tops = {m[0] for m in modules if len(m) == 1}
            body = re.sub(r"(?m)^\s*((pub(\([^)]*\))?\s+)?mod\s+\w+;|pub(\([^)]*\))?\s+use\s[^;]*;)", "", code)
            for top in tops:
                if re.search(r"(?<![:\w])" + top + r"::", body):
                    refs.append(("crate", "::" + top))
        for head, path in refs:
            target = resolve(modules, here, head, [p for p in path.split("::") if p])
            if target != here and not related(here, target):
                edges[here].add(target)
    return edges


def cycles(edges: dict) -> list:
    index, low, stack, on_stack, result = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                result.append(component)

    sys.setrecursionlimit(10000)
    for v in sorted(edges):
        if v not in index:
            visit(v)
    return result


def name(module: tuple) -> str:
    return "::".join(("crate",) + module)


def check(crate: str) -> bool:
    edges = graph_of(crate)
    if "--graph" in sys.argv:
        for m in sorted(edges):
            for t in sorted(edges[m]):
                print(f"{crate}: {name(m)} -> {name(t)}")
    findings = []
    for component in cycles(edges):
        members = sorted(component)
        findings.append(Finding(
            "import cycle between " + ", ".join(name(m) for m in members),
            failure=True,
            details=[f"{name(m)} -> {name(t)}" for m in members for t in sorted(edges[m] & set(members))],
        ))
    return report(crate, findings, f"{len(edges)} modules, no import cycle")


if __name__ == "__main__":
    if "--root" in sys.argv:
        ROOT = Path(sys.argv[sys.argv.index("--root") + 1]).resolve()
    run(CRATES, check)
