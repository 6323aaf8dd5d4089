"""The docs build cleanly with warnings as errors; the README stays a short door into them."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def test_readme_is_short():
    assert len(README.read_text().splitlines()) <= 150


def test_readme_local_links_exist():
    for target in LINK.findall(README.read_text()):
        if re.match(r"[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue  # a URL or an anchor
        path = target.split("#", 1)[0]
        assert (ROOT / path).exists(), f"README links to missing {target}"


def test_readme_test_command_is_ci_command():
    ci = [ln.strip() for ln in (ROOT / ".ci" / "run").read_text().splitlines()
          if ln.strip() and not ln.lstrip().startswith("#")]
    assert ci[-1] in [ln.strip() for ln in README.read_text().splitlines()]


def test_sphinx_build_is_clean(tmp_path):
    pytest.importorskip("sphinx")
    pytest.importorskip("myst_parser")
    proc = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
         "-d", str(tmp_path / "doctrees"), str(ROOT / "docs"), str(tmp_path / "html")],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]


FILE = re.compile(r"`((?:ltau_md/|benchmarks/|tests/|core/|workflows/|integrations/|cli/)"
                  r"[\w/]+\.py)`")


def test_docs_name_only_files_that_exist():
    """No page names a module that was moved or split (e.g. a stale ``core/estimator.py``)."""
    pages = [*(ROOT / "docs").glob("*.md"), README]
    named = [(p.name, rel) for p in pages for rel in FILE.findall(p.read_text())]
    assert named, "the pattern finds the files the pages name"
    missing = [(page, rel) for page, rel in named
               if not ((ROOT / rel).exists() or (ROOT / "ltau_md" / rel).exists())]
    assert not missing, f"pages name missing files: {missing}"


SCRATCH = re.compile(r"(?<![\w.])/(?:tmp|work|check|home|root|scratch)/")
PROVENANCE = {"script", "command", "commit", "uncommitted_changes", "date_utc", "machine",
              "load_average", "result"}


def test_no_scratch_paths_in_docs_readme_benchmarks():
    """Docs, README, examples and benchmark scripts and records use placeholders (OUT/), never
    a development machine's absolute paths."""
    files = [README, *(ROOT / "docs").rglob("*.md"), *(ROOT / "benchmarks").rglob("*.py"),
             *(ROOT / "benchmarks" / "results").glob("*.json"), *(ROOT / "examples").glob("*")]
    hits = [(f.relative_to(ROOT), m.group(0)) for f in files if f.is_file()
            for m in SCRATCH.finditer(f.read_text())]
    assert SCRATCH.search("--out /tmp/acac") and not SCRATCH.search("--out OUT/acac")
    assert not hits, f"absolute scratch paths: {hits}"


def test_benchmark_records_carry_provenance():
    """Every record under benchmarks/results/ says how, where and when it was measured."""
    import json

    records = sorted((ROOT / "benchmarks" / "results").glob("*.json"))
    assert records, "benchmarks/results/ holds the recorded figures"
    for path in records:
        doc = json.loads(path.read_text())
        assert PROVENANCE <= set(doc), f"{path.name} lacks {sorted(PROVENANCE - set(doc))}"
        assert doc["command"].startswith("python benchmarks/"), path.name
        assert re.fullmatch(r"[0-9a-f]{7,40}", doc["commit"] or ""), path.name
        assert len(doc["load_average"]["start"]) == 3 == len(doc["load_average"]["end"])
        assert doc["machine"]["cpus"] >= 1
