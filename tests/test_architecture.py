"""The layout rules of docs/architecture.md ("Layout"), checked on the source (ast, no import):

* no import cycle between project modules (harness/...): imports inside functions count
  (a late import hides a cycle, it does not remove it), and so does a module named in a
  string in a module that imports by name (``"harness.report"`` in the CLI's dispatch
  table, for importlib.import_module; a module path run as ``python -m`` is no import);
  imports under ``if TYPE_CHECKING:`` do not;
* no use of another project module's private name (``module._name``,
  ``from harness.x import _name``, ``monkeypatch.setattr(module, "_name", ...)``,
  ``"harness.x._name"``) in harness/ or tests/ -- a name another module needs is public;
* no harness module over MAX_LINES lines.

Each rule is shown failing on a small synthetic tree, so a checker that silently
passes everything cannot go unnoticed."""

from __future__ import annotations

import ast
import os
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX_LINES = 650
PACKAGES = ("harness", "variants")          # project modules: what a name can belong to

# Exceptions, each with its reason: (file relative to the root, "module.name").  Keep it short.
ALLOWED_PRIVATE: dict[tuple[str, str], str] = {}
ALLOWED_LONG: dict[str, str] = {}


# --------------------------------------------------------------------------- the checker

def modules(root: str, packages=PACKAGES) -> dict[str, str]:
    """Dotted name -> path of every module under the given packages."""
    out = {}
    for pkg in packages:
        for dirpath, dirnames, files in os.walk(os.path.join(root, pkg)):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith((".", "__pycache__")))
            for f in sorted(files):
                if f.endswith(".py"):
                    parts = os.path.relpath(os.path.join(dirpath, f), root)[:-3].split(os.sep)
                    if parts[-1] == "__init__":
                        parts = parts[:-1]
                    out[".".join(parts)] = os.path.join(dirpath, f)
    return out


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for sub in node.body:
                skip.update(id(n) for n in ast.walk(sub))
    return skip


def _imports(tree: ast.AST, name: str, is_pkg: bool, known: dict[str, str]):
    """(alias bound, module imported, private name imported or None, line) of every import."""
    skip = _type_checking_nodes(tree)
    pkg = name if is_pkg else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            for a in node.names:
                yield (a.asname or a.name.partition(".")[0]) if a.asname else None, a.name, None, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = pkg.split(".")[: len(pkg.split(".")) - (node.level - 1)]
                base = ".".join(up + ([node.module] if node.module else []))
            for a in node.names:
                full = f"{base}.{a.name}"
                if full in known:                    # from harness import runner
                    yield a.asname or a.name, full, None, node.lineno
                else:                                # from harness.runner import x
                    yield None, base, a.name, node.lineno


def check(root: str, max_lines: int = MAX_LINES) -> dict:
    """The rules' violations under ``root``: {"cycles": [...], "private": [...], "long": [...]},
    and the import graph of the harness modules ("graph")."""
    known = modules(root)
    project = {m: p for m, p in known.items() if m.split(".")[0] == "harness"}
    users = dict(project)
    tests = os.path.join(root, "tests")
    if os.path.isdir(tests):
        users.update({f"tests.{f[:-3]}": os.path.join(tests, f)
                      for f in sorted(os.listdir(tests)) if f.endswith(".py")})
    graph: dict[str, set[str]] = {m: set() for m in project}
    private, long_ = [], []

    def owner(dotted: str) -> str | None:
        """The project module a dotted name is or is in (harness.link._tool -> harness.link)."""
        while dotted:
            if dotted in known:
                return dotted
            dotted = dotted.rpartition(".")[0]
        return None

    for mod, path in users.items():
        rel = os.path.relpath(path, root)
        with open(path) as f:
            text = f.read()
        tree = ast.parse(text)
        alias: dict[str, str] = {}

        def flag(what: str, line: int, rel: str = rel) -> None:
            if (rel, what) not in ALLOWED_PRIVATE:
                private.append(f"{rel}:{line}: {what}")

        for bound, target, name, line in _imports(tree, mod, path.endswith("__init__.py"), known):
            if target not in known:
                continue
            if bound:
                alias[bound] = target
            if mod in graph and target in graph and target != mod and target != "harness":
                graph[mod].add(target)
            if name and name.startswith("_") and not name.startswith("__") and target != mod:
                flag(f"{target}.{name}", line)
        by_name = any(isinstance(n, ast.Call) and (getattr(n.func, "attr", None) == "import_module"
                                                   or getattr(n.func, "id", None) == "import_module")
                      for n in ast.walk(tree))
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                s = node.value
                if by_name and mod in graph and s in graph and s != mod and s != "harness":
                    graph[mod].add(s)               # imported by name (importlib.import_module)
                o = owner(s) if s.count(".") >= 2 and " " not in s else None
                last = s.rpartition(".")[2]
                if o and o != mod and s != o and last.startswith("_") and not last.startswith("__"):
                    flag(s, node.lineno)            # monkeypatch.setattr("harness.x._name", ...)
            elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                target = alias.get(node.value.id)
                if target and target != mod and node.attr.startswith("_") and not node.attr.startswith("__"):
                    flag(f"{target}.{node.attr}", node.lineno)
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                    and node.func.attr in ("setattr", "getattr", "delattr", "hasattr") and len(node.args) >= 2:
                obj, attr = node.args[0], node.args[1]
                target = alias.get(obj.id) if isinstance(obj, ast.Name) else None
                if target and target != mod and isinstance(attr, ast.Constant) and isinstance(attr.value, str) \
                        and attr.value.startswith("_") and not attr.value.startswith("__"):
                    flag(f"{target}.{attr.value}", node.lineno)
        if mod in project:
            n = text.count("\n")
            if n > max_lines and rel not in ALLOWED_LONG:
                long_.append(f"{rel}: {n} lines (limit {max_lines})")
    cycles = []
    for comp, path in _cycles(graph):
        more = f"  (one cycle of: {', '.join(comp)})" if len(comp) > len(path) - 1 else ""
        cycles.append(" -> ".join(path) + more)
    return {"cycles": cycles, "private": private, "long": long_, "graph": graph}


def _cycles(graph: dict[str, set[str]]) -> list[tuple[list[str], list[str]]]:
    """Each strongly connected component of more than one module, with one cycle through it."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    comps: list[list[str]] = []

    def visit(v: str) -> None:                     # Tarjan; the graph is small
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
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
                comps.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    out = []
    for comp in comps:                             # a path back to the start, for the message
        start, members = comp[0], set(comp)
        path, seen = [start], {start}
        while True:
            nxt = sorted(w for w in graph[path[-1]] if w in members)
            back = [w for w in nxt if w == start]
            if back and len(path) > 1:
                out.append((comp, path + [start]))
                break
            fresh = [w for w in nxt if w not in seen]
            if not fresh:
                out.append((comp, path + [nxt[0]]))
                break
            path.append(fresh[0])
            seen.add(fresh[0])
    return out


# --------------------------------------------------------------------------- the repository

def test_no_import_cycle():
    found = check(ROOT)["cycles"]
    assert not found, "\n".join(found)


def test_no_private_name_of_another_module():
    found = check(ROOT)["private"]
    assert not found, "\n".join(found)


def test_no_harness_module_over_the_line_limit():
    found = check(ROOT)["long"]
    assert not found, "\n".join(found)


def test_allowed_exceptions_name_existing_files():
    """An exception whose file is gone is removed from the lists above."""
    assert not [k for k in ALLOWED_PRIVATE if not os.path.exists(os.path.join(ROOT, k[0]))]
    assert not [k for k in ALLOWED_LONG if not os.path.exists(os.path.join(ROOT, k))]


# The groups of docs/architecture.md ("Layout"), top to bottom: a module imports only from
# its own group or the groups below it.  A new module is added here, where it belongs.
LAYERS = [
    ("commands", ["harness", "harness.__main__", "harness.cli"]),
    ("subcommands", ["harness.report", "harness.reproduce", "harness.profile", "harness.syscalls",
                     "harness.twohost", "harness.combine", "harness.concurrency", "harness.scale",
                     "harness.checkdocs"]),
    ("command line", ["harness.cmdline"]),
    ("writers", ["harness.charts", "harness.reproduction", "harness.frame", "harness.study",
                 "harness.ablation", "harness.batchchart", "harness.interpreters"]),
    ("batches", ["harness.runner", "harness.soak", "harness.tables", "harness.calibration"]),
    ("processes", ["harness.procs", "harness.client", "harness.link", "harness.netns",
                   "harness.impairment", "harness.cpubudget", "harness.servers*"]),
    ("base", ["harness.summary", "harness.records", "harness.linkspec", "harness.environment",
              "harness.kstats", "harness.noise", "harness.procfs", "harness.progress",
              "harness.passes", "harness.metrics", "harness.runrecord"]),
]


def layer_of(module: str) -> int | None:
    for i, (_, names) in enumerate(LAYERS):
        for n in names:
            if module == n or (n.endswith("*") and (module == n[:-1] or module.startswith(n[:-1] + "."))):
                return i
    return None


def test_every_module_has_a_place_in_the_layout():
    missing = [m for m in check(ROOT)["graph"] if layer_of(m) is None]
    assert not missing, f"add to LAYERS (and docs/architecture.md): {missing}"


def upward(graph: dict[str, set[str]]) -> list[str]:
    """Imports of a module from a group above its own."""
    out = []
    for a in sorted(graph):
        for b in sorted(graph[a]):
            la, lb = layer_of(a), layer_of(b)
            if la is not None and lb is not None and lb < la:
                out.append(f"{a} ({LAYERS[la][0]}) imports {b} ({LAYERS[lb][0]})")
    return out


def test_imports_go_down_the_layout():
    up = upward(check(ROOT)["graph"])
    assert not up, "\n".join(up)


# --------------------------------------------------------------------------- the checker can fail

def _tree(tmp_path, files: dict[str, str]) -> str:
    for rel, text in files.items():
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(textwrap.dedent(text))
    return str(tmp_path)


@pytest.fixture
def synthetic(tmp_path):
    return _tree(tmp_path, {
        "harness/__init__.py": "",
        "harness/a.py": "from harness import b\n",
        "harness/b.py": "def late():\n    from harness import c  # late, still a cycle\n",
        "harness/c.py": "import harness.a\n",
        "harness/d.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from harness import e\n",
        "harness/e.py": ("import importlib\nfrom harness import d\nDISPATCH = {'x': 'harness.f'}\n"
                         "def go(k):\n    return importlib.import_module(DISPATCH[k])\n"),
        "harness/f.py": "from harness import e as ee\n",
        "harness/g.py": "from harness import a\nfrom harness.b import _hidden\nx = a._helper\n",
        "harness/long.py": "x = 1\n" * (MAX_LINES + 1),
        # a module path run as a process (python -m), not imported: no edge
        "harness/servers/__init__.py": "RUN = ['python', '-m', 'harness.servers.common']\n",
        "harness/servers/common.py": "from harness import servers\n_private = 1\n",
        "tests/test_x.py": ("from harness import a\nfrom harness.servers import common\n"
                            "def test(monkeypatch):\n"
                            "    monkeypatch.setattr(a, '_thing', 1)\n"
                            "    monkeypatch.setattr('harness.servers.common._private', 2)\n"
                            "    common._private\n"),
    })


def test_checker_finds_a_cycle_even_through_a_late_import(synthetic):
    cycles = check(synthetic)["cycles"]
    assert "harness.a -> harness.b -> harness.c -> harness.a" in cycles
    # an importlib name makes e <-> f a cycle; TYPE_CHECKING keeps d -> e out of it
    assert "harness.e -> harness.f -> harness.e" in cycles
    assert len(cycles) == 2


def test_checker_finds_private_names(synthetic):
    private = check(synthetic)["private"]
    assert "harness/g.py:2: harness.b._hidden" in private
    assert "harness/g.py:3: harness.a._helper" in private
    assert "tests/test_x.py:4: harness.a._thing" in private
    assert "tests/test_x.py:5: harness.servers.common._private" in private
    assert "tests/test_x.py:6: harness.servers.common._private" in private
    assert len(private) == 5


def test_checker_finds_long_modules(synthetic):
    assert check(synthetic)["long"] == [f"harness/long.py: {MAX_LINES + 1} lines (limit {MAX_LINES})"]


def test_checker_finds_an_upward_import(synthetic, monkeypatch):
    monkeypatch.setitem(globals(), "LAYERS", [("top", ["harness.g"]), ("bottom", ["harness.a", "harness.b"])])
    assert upward(check(synthetic)["graph"]) == []              # g imports a: downward
    monkeypatch.setitem(globals(), "LAYERS", [("top", ["harness.a"]), ("bottom", ["harness.g"])])
    assert upward(check(synthetic)["graph"]) == ["harness.g (bottom) imports harness.a (top)"]
