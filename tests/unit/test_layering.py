"""The layer picture holds (read from :mod:`ltau_md._layers`, as the docs do): no module
imports one of a higher layer, the core never imports nequip (or torch), only the CLI imports
the CLI, and no module imports one that imports it back."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from ltau_md._layers import layer_of

PKG = Path(__file__).resolve().parents[2] / "ltau_md"


def _module_name(path: Path, root: Path = PKG) -> str:
    rel = path.relative_to(root.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _imports(path: Path, modules: set[str], root: Path = PKG) -> set[str]:
    """ltau_md modules imported by ``path`` anywhere (also lazily inside functions), except
    under ``if TYPE_CHECKING:``."""
    tree = ast.parse(path.read_text())
    mod = _module_name(path, root)
    pkg = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
    out: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("ltau_md"):
                for alias in node.names:  # "from . import x": a submodule or a name
                    sub = f"{target}.{alias.name}"
                    out.add(sub if sub in modules else target)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("ltau_md"))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return out


def _graph() -> dict[str, set[str]]:
    mods = {_module_name(p): p for p in PKG.rglob("*.py")}
    return {m: {t for t in _imports(p, set(mods)) if t in mods and t != m}
            for m, p in mods.items()}


def test_every_module_has_a_layer():
    missing = sorted(m for m in _graph() if m != "ltau_md" and layer_of(m) is None)
    assert not missing, f"modules outside every layer of ltau_md._layers: {missing}"


def test_no_module_imports_a_higher_layer():
    g = _graph()
    bad = {}
    for mod, targets in g.items():
        lm = layer_of(mod)
        if lm is None:
            continue
        # the package root counts as above everything: importing it from a layer is an edge up
        up = {t for t in targets if t == "ltau_md" or (layer_of(t) or 0) > lm}
        if up:
            bad[mod] = sorted(up)
    assert not bad, f"modules importing a higher layer: {bad}"


def test_core_never_imports_adapters_or_commands():
    g = _graph()
    core = [m for m in g if layer_of(m) == 0]
    bad = {m: sorted(t for t in g[m] if t == "ltau_md" or (layer_of(t) or 0) > 0)
           for m in core}
    bad = {m: ts for m, ts in bad.items() if ts}
    assert len(core) > 10 and not bad, f"core modules import adapters/commands: {bad}"


def test_layer_checker_catches_an_upward_import(tmp_path):
    """The checker above could fail: a core module importing the CLI is reported."""
    fake = tmp_path / "ltau_md" / "core" / "bad.py"
    fake.parent.mkdir(parents=True)
    fake.write_text("from ltau_md.cli import main\n")
    edges = _imports(fake, {"ltau_md.cli", "ltau_md.core.bad"}, root=tmp_path / "ltau_md")
    assert edges == {"ltau_md.cli"}
    assert layer_of("ltau_md.cli") > layer_of("ltau_md.core.bad")


def test_only_cli_imports_commands():
    g = _graph()
    users = sorted(m for m, ts in g.items() if any(t.startswith("ltau_md.cli") for t in ts)
                   and not m.startswith(("ltau_md.cli", "ltau_md.cli")))
    assert not users, f"modules outside cli/commands import ltau_md.cli: {users}"


def test_no_import_cycles():
    g = _graph()
    # the package __init__ re-exports the core; ignore edges *into* package inits
    # (importing ltau_md.x runs ltau_md/__init__ first by Python's rules, not by design)
    edges = {m: {t for t in ts if not (PKG / Path(*t.split(".")[1:]) / "__init__.py").exists()}
             for m, ts in g.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for t in sorted(edges.get(m, ())):
            if state.get(t) == 1:
                return stack[stack.index(t):] + [t]
            if t not in state and (cyc := dfs(t)):
                return cyc
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(edges):
        if m not in state and (cyc := dfs(m)):
            pytest.fail(f"import cycle: {' -> '.join(cyc)}")


def test_core_imports_with_nequip_unimportable():
    """Every core module imports, and the package's public names resolve, in a process where
    ``import nequip`` (and torch) raise ImportError."""
    core = sorted(m for m in _graph() if layer_of(m) == 0)
    code = f"""
import importlib, sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("nequip", "torch", "lightning"):
            raise ImportError(f"blocked: {{name}}")
        return None
sys.meta_path.insert(0, Block())
for name in {core!r}:
    importlib.import_module(name)
import ltau_md
for name in ltau_md.__all__:
    getattr(ltau_md, name)
import ltau_md.cli
ltau_md.cli.build_parser()
assert not any(m.split(".")[0] in ("nequip", "torch") for m in sys.modules), sorted(
    m for m in sys.modules if m.split(".")[0] in ("nequip", "torch"))
print("ok")
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "ok"


def test_block_really_blocks():
    """The blocker of the test above does make nequip unimportable (the test could fail)."""
    code = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "nequip":
            raise ImportError("blocked")
sys.meta_path.insert(0, Block())
import ltau_md.integrations.nequip.model
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode != 0 and "blocked" in proc.stderr


def test_every_public_module_declares_all_and_its_names_resolve():
    """``__all__`` in every public module (no leading underscore in any part of its name), and
    each listed name exists there."""
    import importlib

    public = sorted(m for m in _graph() if m != "ltau_md" and not any(
        part.startswith("_") for part in m.split(".")[1:]))
    missing, broken = [], {}
    for name in public:
        mod = importlib.import_module(name)
        names = getattr(mod, "__all__", None)
        if names is None:
            missing.append(name)
            continue
        bad = [n for n in names if not hasattr(mod, n)]
        if bad:
            broken[name] = bad
    assert len(public) > 30 and not missing and not broken, (missing, broken)
