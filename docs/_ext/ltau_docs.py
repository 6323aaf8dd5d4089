"""Local Sphinx extension: ``ltau-cli`` renders ``ltau_md.cli.build_parser()``; ``ltau-layers``
renders ``ltau_md._layers.LAYERS`` as a table (the source the layering test reads);
``ltau-modules`` lists every module and package of the source tree by layer, with the first
line of its docstring (so the architecture page cannot name a file that is gone)."""

from __future__ import annotations

import argparse
import ast
import re
from pathlib import Path

from docutils import nodes
from sphinx.util.docutils import SphinxDirective


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _options(parser: argparse.ArgumentParser) -> nodes.definition_list:
    dl = nodes.definition_list()
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        if action.option_strings:
            term = ", ".join(action.option_strings)
            if action.nargs != 0:
                term += " " + (action.metavar or action.dest.upper()
                               if not isinstance(action.metavar, tuple)
                               else " ".join(action.metavar))
        else:
            term = action.metavar or action.dest
        text = (action.help or "").replace("%(default)s", str(action.default))
        if action.help == argparse.SUPPRESS:
            continue
        if action.default not in (None, False, argparse.SUPPRESS) and "default" not in text:
            text += f" (default: {action.default})"
        item = nodes.definition_list_item()
        item += nodes.term("", "", nodes.literal(text=str(term)))
        d = nodes.definition()
        d += nodes.paragraph(text=text or "-")
        item += d
        dl += item
    return dl


class CLIDirective(SphinxDirective):
    """One section per subcommand: usage as a literal block, options as a definition list."""

    def run(self) -> list[nodes.Node]:
        from ltau_md.cli import build_parser

        parser = build_parser()
        out: list[nodes.Node] = [nodes.literal_block(text=parser.format_usage().strip())]
        for name, sub in _subparsers(parser).items():
            sec = nodes.section(ids=[nodes.make_id(f"cli-{name}")])
            sec += nodes.title(text=f"ltau-md {name}")
            if sub.description:
                sec += nodes.paragraph(text=sub.description)
            sec += nodes.literal_block(text=sub.format_usage().strip())
            sec += _options(sub)
            out.append(sec)
        return out


def _table(widths: tuple[int, ...], header: list[nodes.Node] | None,
           rows: list[list[nodes.Node]]) -> nodes.table:
    """A docutils table: column ``widths``, an optional ``header`` row, one row per item of
    ``rows``; every cell is a node (a paragraph) put as it is into its entry."""
    table = nodes.table()
    group = nodes.tgroup(cols=len(widths))
    table += group
    for width in widths:
        group += nodes.colspec(colwidth=width)

    def row(cells: list[nodes.Node]) -> nodes.row:
        r = nodes.row()
        for c in cells:
            e = nodes.entry()
            e += c
            r += e
        return r

    if header is not None:
        head = nodes.thead()
        head += row(header)
        group += head
    body = nodes.tbody()
    for cells in rows:
        body += row(cells)
    group += body
    return table


def _text(text: str) -> nodes.paragraph:
    return nodes.paragraph(text=text)


def _code(text: str) -> nodes.paragraph:
    return nodes.paragraph("", "", nodes.literal(text=text))


class LayersDirective(SphinxDirective):
    """A table of the layers, bottom to top, from ``ltau_md._layers.LAYERS``."""

    def run(self) -> list[nodes.Node]:
        from ltau_md._layers import LAYERS

        rows = []
        for name, members, what in LAYERS:
            mods = nodes.paragraph()
            for i, m in enumerate(members):
                if i:
                    mods += nodes.Text(", ")
                mods += nodes.literal(text=m)
            rows.append([_text(name), mods, _text(what)])
        header = [_text(t) for t in ("layer", "modules", "what it holds")]
        return [_table((1, 2, 4), header, rows)]


def _summary(path: Path) -> str:
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    first = doc.strip().split("\n\n", 1)[0]
    return " ".join(first.split())


def module_rows() -> list[tuple[str, str, str, str]]:
    """(layer, path relative to ``ltau_md/``, its parts (private submodules of a package),
    summary) for every public module and package, bottom layer first."""
    import ltau_md
    from ltau_md._layers import LAYERS, layer_of

    root = Path(ltau_md.__file__).parent
    rows = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if rel.name == "__init__.py":
            if rel.parent == Path("."):
                continue
            target, shown = path, f"{rel.parent.as_posix()}/"
            parts = ", ".join(sorted(p.stem for p in path.parent.glob("_*.py")
                                     if p.name != "__init__.py"))
        elif any(q.startswith("_") for q in rel.parent.parts) or (
                rel.stem.startswith("_") and (path.parent / "__init__.py").exists()
                and rel.parent != Path(".")):
            continue  # a private part of a package: listed with the package
        else:
            target, shown, parts = path, rel.as_posix(), ""
        dotted = "ltau_md." + ".".join(rel.with_suffix("").parts).removesuffix(".__init__")
        layer = layer_of(dotted)
        name = LAYERS[layer][0] if layer is not None else "-"
        rows.append((layer if layer is not None else -1, name, shown, parts,
                     _summary(target)))
    rows.sort(key=lambda r: (r[0], r[2]))
    return [r[1:] for r in rows]


class ModulesDirective(SphinxDirective):
    """A table of every public module and package (with its private parts), by layer."""

    def run(self) -> list[nodes.Node]:
        rows = [[_text(layer), _code(shown), _text(parts), _text(summary)]
                for layer, shown, parts, summary in module_rows()]
        header = [_text(t) for t in ("layer", "module", "parts", "what it holds")]
        return [_table((1, 2, 2, 5), header, rows)]


RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"


def _flatten(prefix: str, value, out: list[tuple[str, str]], keys: set[str] | None) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out, keys)
        return
    if keys is not None and not any(prefix == k or prefix.startswith(k + ".") for k in keys):
        return
    if (isinstance(value, list) and len(value) == 2 and isinstance(value[1], list)
            and len(value[1]) == 2 and not isinstance(value[0], (list, dict))):
        low, high = value[1]  # (value, [low, high]): a figure with its 95 % interval
        out.append((prefix, f"{_cell(value[0])} [{_cell(low)}, {_cell(high)}]"))
        return
    if isinstance(value, list) and (len(value) > 6 or any(isinstance(v, (dict, list))
                                                          for v in value)):
        return  # long or nested series: in the JSON file, not the table
    if isinstance(value, list):
        out.append((prefix, ", ".join(_cell(v) for v in value)))
    else:
        out.append((prefix, _cell(value)))


def _names(text: str) -> list[str]:
    return [k.strip() for k in text.split(",") if k.strip()]


def _dig(value, dotted: str):
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _cell(value) -> str:
    """A figure as the tables show it: floats to 4 significant digits, None as "-"."""
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)


class BenchmarkDirective(SphinxDirective):
    """One benchmark record of ``benchmarks/results/NAME.json``: its provenance (command,
    commit, date, machine load) and a table of its figures (``:keys:`` limits them)."""

    required_arguments = 1
    option_spec = {"keys": _names, "table": str, "columns": _names}

    def run(self) -> list[nodes.Node]:
        import json

        name = self.arguments[0]
        path = RESULTS / f"{name}.json"
        self.env.note_dependency(str(path))
        if not path.is_file():
            raise self.error(f"no benchmark record {path.name} under benchmarks/results/")
        doc = json.loads(path.read_text())
        load = doc.get("load_average") or {}
        fmt = "/".join
        prov = nodes.paragraph()
        prov += nodes.Text(f"Record {path.name}: measured {doc.get('date_utc')} at commit ")
        prov += nodes.literal(text=str(doc.get("commit")))
        if doc.get("uncommitted_changes"):
            prov += nodes.Text(" (with uncommitted changes)")
        prov += nodes.Text(
            f" on {doc.get('machine', {}).get('cpus')} CPUs, load average (1/5/15 min) "
            f"{fmt(f'{x:.2f}' for x in load.get('start', []))} at the start and "
            f"{fmt(f'{x:.2f}' for x in load.get('end', []))} at the end; command ")
        prov += nodes.literal(text=str(doc.get("command")))
        prov += nodes.Text(".")
        if "table" in self.options:  # a list of dicts (one per run size, ...) as a table
            items = _dig(doc.get("result"), self.options["table"])
            columns = self.options.get("columns") or []
            if not isinstance(items, list) or not columns:
                raise self.error(f"{path.name}: :table: must name a list and :columns: its "
                                 "fields")
            grid = [[_text(_cell(_dig(item, c))) for c in columns] for item in items]
            return [prov, _table((1,) * len(columns), [_code(c) for c in columns], grid)]
        keys = set(self.options["keys"]) if "keys" in self.options else None
        rows: list[tuple[str, str]] = []
        _flatten("", doc.get("result"), rows, keys)
        return [prov, _table((3, 2), None, [[_code(k), _text(t)] for k, t in rows])]


_SPAN = re.compile(r"(``.+?``|`[^`]+`)")
_TRAILING_UNDERSCORE = re.compile(r"(?<=\w)_(?!\w)")


def _escape(text: str) -> str:
    parts = _SPAN.split(text)
    for i in range(0, len(parts), 2):  # outside inline literals and roles only
        parts[i] = _TRAILING_UNDERSCORE.sub(r"\\_", parts[i].replace("|", r"\|"))
    return "".join(parts)


def escape_plain_docstring(app, what, name, obj, options, lines: list[str]) -> None:
    """The package's docstrings are plain text: ``|F|`` and ``summary_`` are not meant as
    reST substitutions or link targets, so escape them (outside literals and literal blocks)."""
    known = {"parameters", "returns", "yields", "raises", "attributes", "notes", "examples",
             "see also", "references", "warnings", "methods", "other parameters"}
    for i in range(len(lines) - 2, -1, -1):  # an unknown numpy-style header: a Notes title
        title, rule = lines[i].strip(), lines[i + 1].strip()
        if (title and len(rule) >= 3 and set(rule) == {"-"}
                and title.lower() not in known):
            indent = lines[i][: len(lines[i]) - len(lines[i].lstrip())]
            lines[i : i + 2] = [indent + "Notes", indent + "-----", "", indent + title + ":", ""]
    literal_indent = None
    for i, line in enumerate(lines):
        stripped = line.lstrip()
        indent = len(line) - len(stripped)
        if literal_indent is not None:
            if not stripped or indent > literal_indent:
                continue
            literal_indent = None
        if stripped.startswith(">>>"):
            continue
        lines[i] = _escape(line)
        if line.rstrip().endswith("::"):
            literal_indent = indent


def separate_indented_blocks(app, what, name, obj, options, lines: list[str]) -> None:
    """Plain-text docstrings indent examples and lists without ``::`` or blank lines; put a
    blank line where the indentation changes so docutils reads them as block quotes."""
    out: list[str] = []
    prev = ""
    for line in lines:
        if line.strip() and prev.strip():
            ind, pind = len(line) - len(line.lstrip()), len(prev) - len(prev.lstrip())
            head = prev.lstrip()
            if ind < pind and not line.lstrip().startswith(":"):
                out.append("")
            elif ind > pind and not (head.startswith("..") or head.startswith(":")
                                     or head.rstrip().endswith("::")):
                out.append("")
        out.append(line)
        prev = line
    lines[:] = out


def setup(app):
    app.connect("autodoc-process-docstring", escape_plain_docstring, priority=400)
    app.connect("autodoc-process-docstring", separate_indented_blocks, priority=600)
    app.add_directive("ltau-cli", CLIDirective)
    app.add_directive("ltau-layers", LayersDirective)
    app.add_directive("ltau-modules", ModulesDirective)
    app.add_directive("ltau-benchmark", BenchmarkDirective)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
