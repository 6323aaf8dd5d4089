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
