#!/usr/bin/env python3
"""Import cycles between the modules of each of our crates.

For every crate under crates/ (not crates/third-party), from each crate
root (src/lib.rs, src/main.rs, src/bin/*.rs) this follows the `mod`
declarations to find the crate's modules, then builds the graph
"module -> the modules it imports":

  * `use crate::a::...`, `use self::a::...`, `use super::...` and a `use`
    of a child module by its bare name (`use a::X` in the module that
    declares `mod a;`), use trees with braces included;
  * the same paths written in code (`crate::a::f()`, `super::b::C`);
  * a path names the longest module it starts with: `crate::a::b::X`
    is module `a::b` if there is one, else `a`; `crate::X` (an item of
    the crate root) is the root, written `crate`; `super::X` is the
    parent module, `super::b::X` the sibling `b`.

`mod` declarations are not imports, and comments and string literals
are ignored. Code in an inline `mod x { ... }` (such as `mod tests`)
counts as its file's module, and its `super::` is that module.

Every elementary cycle is listed as `<crate>: a -> b -> ... -> a`,
starting from its smallest module. The allowlist (tests/import-cycles.allow,
one cycle per line in that form, `#` comments) names the cycles that are
known and being removed: the check fails on any cycle not in it and warns
about listed cycles that no longer exist (delete those lines).

Usage: tests/import-cycles.py [--allow FILE] [ROOT]   (ROOT: the workspace)
       tests/import-cycles.py --self-test
"""

import os
import re
import sys
import tempfile

IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
# More cycles than this in one crate are not listed one by one.
MAX_CYCLES = 2000


def strip_comments_and_strings(text):
    """The source with comments, string and char literals blanked out
    (newlines kept, so that nothing else moves)."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            i = j
            continue
        if text.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
            continue
        m = re.compile(r'b?r(#*)"').match(text, i)
        if m and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            end = '"' + m.group(1)
            j = text.find(end, m.end())
            j = n if j < 0 else j + len(end)
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
            continue
        if c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append(re.sub(r"[^\n]", " ", text[i : j + 1]))
            i = j + 1
            continue
        if c == "'":
            # A char literal ('a', '\n', '\u{..}'), not a lifetime ('a).
            m = re.compile(r"'(\\[^']+|[^\\'])'").match(text, i)
            if m:
                out.append(" " * (m.end() - i))
                i = m.end()
                continue
        out.append(c)
        i += 1
    return "".join(out)


def mod_declarations(code):
    """The names of `mod x;` declarations (files), with their #[path]."""
    found = []
    for m in re.finditer(
        r'((?:#\[[^\]]*\]\s*)*)(?:pub(?:\([^)]*\))?\s+)?mod\s+(' + IDENT + r')\s*;', code
    ):
        path = re.search(r'#\[path\s*=\s*"([^"]+)"\]', m.group(1))
        found.append((m.group(2), path.group(1) if path else None))
    return found


def find_modules(root_file):
    """Module path (tuple; () is the root) -> file, following `mod x;`."""
    modules = {}

    def visit(path, file, is_dir_owner):
        modules[path] = file
        with open(file, encoding="utf-8") as f:
            code = strip_comments_and_strings(f.read())
        base = os.path.dirname(file)
        if not is_dir_owner:
            base = os.path.join(base, os.path.splitext(os.path.basename(file))[0])
        for name, explicit in mod_declarations(code):
            if explicit:
                candidates = [(os.path.join(os.path.dirname(file), explicit), False)]
            else:
                candidates = [
                    (os.path.join(base, name + ".rs"), False),
                    (os.path.join(base, name, "mod.rs"), True),
                ]
            for candidate, owner in candidates:
                if os.path.isfile(candidate):
                    visit(path + (name,), candidate, owner or explicit is not None and candidate.endswith("mod.rs"))
                    break

    visit((), root_file, True)
    return modules


def use_paths(tree):
    """Expands a use tree (`crate::{a::X, b::{self, Y as Z}}`) into its
    paths: (segments, the name it brings in scope)."""
    tree = re.sub(r"\s+as\s+(" + IDENT + ")", r"@\1", tree)
    tree = re.sub(r"\s+", "", tree)

    def parse(s, i):
        # The paths of the tree that starts at s[i], and where it ends.
        prefix = []
        while i < len(s):
            m = re.compile("(" + IDENT + r"|\*)(?:@(" + IDENT + "))?").match(s, i)
            if m:
                prefix.append(m.group(1))
                i = m.end()
                if s.startswith("::", i):
                    i += 2
                    continue
                name = m.group(2) or (prefix[-2] if m.group(1) == "self" and len(prefix) > 1 else m.group(1))
                return [(prefix, name)], i
            if s.startswith("{", i):
                i += 1
                paths = []
                while i < len(s) and s[i] != "}":
                    sub, i = parse(s, i)
                    paths += [(prefix + p, name) for p, name in sub]
                    if i < len(s) and s[i] == ",":
                        i += 1
                return paths or [(prefix, None)], i + 1
            break
        return [(prefix, None)], i

    return parse(tree, 0)[0]


def inline_module_spans(code):
    """(start, end) offsets of the bodies of inline `mod x { ... }`."""
    spans = []
    for m in re.finditer(r"\bmod\s+" + IDENT + r"\s*\{", code):
        depth, j = 1, m.end()
        while j < len(code) and depth:
            if code[j] == "{":
                depth += 1
            elif code[j] == "}":
                depth -= 1
            j += 1
        spans.append((m.end(), j))
    return spans


def resolve(module, segments, graph_info, inline, depth=0):
    """The module a path names, or None when it names none of ours. A
    path to a name that a module brings in with `use` (a re-export, as a
    crate root's `pub use a::X` is) names the module it comes from."""
    modules, children, uses = graph_info
    if not segments:
        return None
    first = segments[0]
    if first == "crate":
        base, rest = (), list(segments[1:])
    elif first in ("self", "super"):
        base = module
        rest = list(segments)
        # In an inline module, `super` is the file's module and `self`
        # the inline module, which counts as the file's module.
        if inline and rest[0] == "super":
            rest = rest[1:]
        while rest and rest[0] in ("self", "super"):
            if rest[0] == "super":
                if not base:
                    return None
                base = base[:-1]
            rest = rest[1:]
    elif first in children.get(module, ()):
        base, rest = module, list(segments)
    else:
        return None
    target = base
    while rest and target + (rest[0],) in modules:
        target = target + (rest[0],)
        rest = rest[1:]
    if rest and depth < 8:
        source = uses.get(target, {}).get(rest[0])
        if source is not None:
            through = resolve(target, source, graph_info, False, depth + 1)
            if through is not None:
                return through
    return target


def module_name(path):
    return "::".join(path) if path else "crate"


def prepared(file):
    with open(file, encoding="utf-8") as f:
        code = strip_comments_and_strings(f.read())
    return re.sub(r"pub\s*\(\s*in\s+[^)]*\)", "pub", code)


def import_graph(modules):
    children = {}
    for path in modules:
        if path:
            children.setdefault(path[:-1], set()).add(path[-1])
    codes = {path: prepared(file) for path, file in modules.items()}
    uses = {}
    found = {}
    for path, code in codes.items():
        spans = inline_module_spans(code)
        found[path] = []
        for m in re.finditer(r"\buse\s+([^;]+);", code):
            inline = any(a <= m.start() < b for a, b in spans)
            for segments, name in use_paths(m.group(1)):
                found[path].append((inline, segments))
                if name and name not in ("*", "self", "_") and not inline:
                    uses.setdefault(path, {})[name] = segments
        for m in re.finditer(r"(?<![A-Za-z0-9_:])((?:crate|self|super)(?:\s*::\s*" + IDENT + r")+)", code):
            inline = any(a <= m.start() < b for a, b in spans)
            found[path].append((inline, re.split(r"\s*::\s*", m.group(1))))
        # A child module named bare in code: `index::QUEUES`.
        for name in children.get(path, ()):
            for m in re.finditer(r"(?<![A-Za-z0-9_:])" + name + r"\s*::\s*(" + IDENT + ")", code):
                inline = any(a <= m.start() < b for a, b in spans)
                found[path].append((inline, [name, m.group(1)]))
    info = (modules, children, uses)
    graph = {path: set() for path in modules}
    for path, paths in found.items():
        for inline, segments in paths:
            target = resolve(path, segments, info, inline)
            if target is not None and target != path:
                graph[path].add(target)
    return graph


def cycles(graph):
    """Every elementary cycle, as a list of nodes starting at its
    smallest; None when there are more than MAX_CYCLES."""
    order = sorted(graph, key=module_name)
    rank = {node: i for i, node in enumerate(order)}
    found = []
    for start in order:
        # Cycles whose smallest node is `start`: a DFS through larger nodes.
        stack = [(start, iter(sorted(graph[start], key=module_name)))]
        on_path = [start]
        while stack:
            node, it = stack[-1]
            advanced = False
            for nxt in it:
                if nxt == start:
                    found.append(list(on_path))
                    if len(found) > MAX_CYCLES:
                        return None
                elif rank[nxt] > rank[start] and nxt not in on_path:
                    stack.append((nxt, iter(sorted(graph[nxt], key=module_name))))
                    on_path.append(nxt)
                    advanced = True
                    break
            if not advanced:
                stack.pop()
                on_path.pop()
    return found


def crate_roots(workspace):
    crates_dir = os.path.join(workspace, "crates")
    for crate in sorted(os.listdir(crates_dir)):
        src = os.path.join(crates_dir, crate, "src")
        if crate == "third-party" or not os.path.isdir(src):
            continue
        for root in ("lib.rs", "main.rs"):
            if os.path.isfile(os.path.join(src, root)):
                label = crate if root == "lib.rs" else crate + "(bin)"
                yield label, os.path.join(src, root)
        bin_dir = os.path.join(src, "bin")
        if os.path.isdir(bin_dir):
            for b in sorted(os.listdir(bin_dir)):
                if b.endswith(".rs"):
                    yield crate + "(bin " + b[:-3] + ")", os.path.join(bin_dir, b)


def find_all_cycles(workspace):
    """Lines `<crate>: a -> b -> a` for every cycle, sorted."""
    lines = []
    for label, root in crate_roots(workspace):
        graph = import_graph(find_modules(root))
        found = cycles(graph)
        if found is None:
            lines.append(f"{label}: more than {MAX_CYCLES} cycles")
            continue
        for cycle in found:
            names = [module_name(m) for m in cycle] + [module_name(cycle[0])]
            lines.append(f"{label}: " + " -> ".join(names))
    return sorted(lines)


def read_allowlist(path):
    if not os.path.isfile(path):
        return set()
    with open(path, encoding="utf-8") as f:
        return {
            re.sub(r"\s+", " ", line.split("#", 1)[0]).strip()
            for line in f
            if line.split("#", 1)[0].strip()
        }


def check(workspace, allow_file, out=sys.stdout, err=sys.stderr):
    """0 when every cycle is allowed; 1 otherwise."""
    found = find_all_cycles(workspace)
    allowed = read_allowlist(allow_file)
    new = [c for c in found if c not in allowed]
    gone = sorted(allowed - set(found))
    for c in gone:
        print(f"warning: allowed cycle no longer exists (remove it from {allow_file}): {c}", file=err)
    if new:
        print(f"import cycles between modules ({len(new)} not allowed):", file=err)
        for c in new:
            print(f"  {c}", file=err)
        return 1
    print(f"import cycles: none beyond the {len(found)} allowed", file=out)
    return 0


def self_test():
    """Checks the checker on a tiny synthetic workspace."""
    import io

    files = {
        "crates/demo/src/lib.rs": """
            //! use crate::b::X; in a comment does not count
            mod a;
            pub mod b;
            mod c;
            mod d;
            mod e;
            mod f;
            mod g;
            pub use crate::e::Thing;
            pub use g::G;
            pub use d::Z;
            const S: &str = "crate::a::not_an_import";
        """,
        # a -> b -> a, through a use tree and a path in code.
        "crates/demo/src/a.rs": "use crate::{b::{self, X}, c as _};\nfn f() { b::g(); }\n",
        "crates/demo/src/b.rs": "mod inner;\npub fn g() { crate::a::h(); }\n#[cfg(test)]\nmod tests { use super::*; }\n",
        # A child module's file: super::super is the crate root's `c`.
        "crates/demo/src/b/inner.rs": "use super::super::c::Y;\n",
        # c names its sibling d through super:: (no cycle: d imports nothing).
        "crates/demo/src/c.rs": "use super::d::Z;\n",
        "crates/demo/src/d.rs": "pub struct Z;\n",
        # e imports the root's items; the root re-exports e: a cycle.
        "crates/demo/src/e.rs": "use crate::S;\npub struct Thing;\n",
        # f: a `mod` declaration of the root is not an import.
        "crates/demo/src/f.rs": "",
        # g takes d's Z through the root's re-export: g -> d, not a cycle
        # with the root, which imports g.
        "crates/demo/src/g.rs": "use crate::Z as T;\npub struct G;\n",
        # A binary crate: its own modules.
        "crates/demo2/src/main.rs": "mod x;\nmod y;\nfn main() { x::go(); }\n",
        "crates/demo2/src/x.rs": "pub fn go() { crate::y::go() }\n",
        "crates/demo2/src/y.rs": "pub fn go() { super::x::go() }\n",
        # Not ours: never looked at.
        "crates/third-party/lib/src/lib.rs": "mod p; mod q;\n",
    }
    want = [
        "demo2(bin): x -> y -> x",
        "demo: a -> b -> a",
        "demo: crate -> e -> crate",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for name, text in files.items():
            path = os.path.join(tmp, name)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
        got = find_all_cycles(tmp)
        assert got == want, f"cycles: {got}"
        allow = os.path.join(tmp, "allow")
        with open(allow, "w", encoding="utf-8") as f:
            f.write("# known\ndemo: a -> b -> a\ndemo: b -> c -> b   # gone\n")
        out, err = io.StringIO(), io.StringIO()
        assert check(tmp, allow, out, err) == 1
        assert "demo: crate -> e -> crate" in err.getvalue(), err.getvalue()
        assert "demo: a -> b -> a" not in err.getvalue().split("not allowed")[-1], err.getvalue()
        assert "no longer exists" in err.getvalue() and "b -> c -> b" in err.getvalue()
        with open(allow, "w", encoding="utf-8") as f:
            f.write("\n".join(want) + "\n")
        out, err = io.StringIO(), io.StringIO()
        assert check(tmp, allow, out, err) == 0, err.getvalue()
        assert err.getvalue() == "", err.getvalue()
    print("import-cycles self-test: ok")
    return 0


def main(argv):
    args = list(argv[1:])
    if args == ["--self-test"]:
        return self_test()
    here = os.path.dirname(os.path.abspath(__file__))
    allow = os.path.join(here, "import-cycles.allow")
    if len(args) >= 2 and args[0] == "--allow":
        allow = args[1]
        args = args[2:]
    workspace = args[0] if args else os.path.dirname(here)
    return check(workspace, allow)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
