"""Outputs never lose or mix data: the output-directory rule (files.prepare_output_dir,
replace_dir, atomic_dir) for every writer, and file modes that follow the umask."""

from __future__ import annotations

import json
import os
import stat

import numpy as np
import pytest

from ltau_md.core.errorlog import ErrorLog
from ltau_md.core.estimator import LTAUEstimator
from ltau_md.core.exceptions import LTAUError, OutputExistsError
from ltau_md.core.files import (
    MARKER,
    atomic_dir,
    current_umask,
    mark_output_dir,
    output_kind,
    prepare_output_dir,
    replace_dir,
    write_json_atomic,
    write_text_atomic,
)


def _plant(d, name="notes.txt", text="my notes, keep me"):
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_text(text)
    return d / name


def _listing(d):
    return sorted(str(p.relative_to(d)) for p in d.rglob("*"))


def _mode(p):
    return stat.S_IMODE(os.stat(p).st_mode)


@pytest.fixture
def umask():
    """Set a umask for one test and restore the previous one."""
    old = os.umask(0o022)
    os.umask(old)
    yield lambda m: os.umask(m)
    os.umask(old)


# ---------------------------------------------------------------- prepare_output_dir
def test_error_is_ltau_and_file_exists_error():
    assert issubclass(OutputExistsError, LTAUError) and issubclass(OutputExistsError,
                                                                    FileExistsError)


def test_prepare_creates_and_marks_missing_and_empty(tmp_path):
    d = prepare_output_dir(tmp_path / "a" / "b", "md")
    assert d.is_dir() and _listing(d) == [MARKER]
    assert json.loads((d / MARKER).read_text())["kind"] == "md" and output_kind(d) == "md"
    (tmp_path / "empty").mkdir()
    prepare_output_dir(tmp_path / "empty", "relax")
    assert output_kind(tmp_path / "empty") == "relax"
    # prepared earlier, nothing written yet: reused without overwrite
    assert prepare_output_dir(d, "md") == d


@pytest.mark.parametrize("overwrite", [False, True])
def test_prepare_refuses_foreign_dir_and_leaves_it_intact(tmp_path, overwrite):
    d = tmp_path / "mine"
    note = _plant(d)
    (d / "sub").mkdir()
    (d / "sub" / "data.bin").write_bytes(b"\x00\x01")
    before = _listing(d)
    with pytest.raises(OutputExistsError, match="not written by ltau-md"):
        prepare_output_dir(d, "md", overwrite=overwrite)
    assert _listing(d) == before and note.read_text() == "my notes, keep me"
    # a file where the directory should be
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(OutputExistsError, match="not a directory"):
        prepare_output_dir(f, "md", overwrite=overwrite)
    assert f.read_text() == "x"


def test_prepare_refuses_other_kind_even_with_overwrite(tmp_path):
    d = prepare_output_dir(tmp_path / "run", "relax")
    (d / "summary.json").write_text("[]")
    with pytest.raises(OutputExistsError, match="another kind"):
        prepare_output_dir(d, "md", overwrite=True)
    assert _listing(d) == sorted([MARKER, "summary.json"])


def test_prepare_same_kind_needs_overwrite_then_starts_clean(tmp_path):
    d = prepare_output_dir(tmp_path / "run", "md")
    (d / "steps.jsonl").write_text('{"step": 0}\n')
    (d / "0003").mkdir()
    (d / "0003" / "stale.txt").write_text("stale")
    with pytest.raises(OutputExistsError, match="overwrite"):
        prepare_output_dir(d, "md")
    assert (d / "0003" / "stale.txt").exists()
    assert prepare_output_dir(d, "md", overwrite=True) == d
    assert _listing(d) == [MARKER] and output_kind(d) == "md"
    # the old contents were moved aside and removed: no leftovers next to it either
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_prepare_needs_our_marker_not_just_a_manifest(tmp_path):
    d = tmp_path / "est"
    write_json_atomic(d / "manifest.json", {"format": "md"})  # a look-alike, not a marker
    with pytest.raises(OutputExistsError):
        prepare_output_dir(d, "md", overwrite=True)
    assert (d / "manifest.json").exists()


# ---------------------------------------------------------------- replace_dir / atomic_dir
def _artifact(d, fmt, payload="new"):
    d.mkdir(parents=True)
    write_json_atomic(d / "manifest.json", {"format": fmt, "version": 1})
    (d / "payload.txt").write_text(payload)
    return d


def test_replace_dir_refuses_foreign_and_other_format(tmp_path):
    final = tmp_path / "final"
    note = _plant(final)
    tmp = _artifact(tmp_path / ".final.tmp", "ltau-md/estimator")
    with pytest.raises(OutputExistsError):
        replace_dir(tmp, final)
    assert _listing(final) == ["notes.txt"] and note.read_text() == "my notes, keep me"
    assert (tmp / "payload.txt").exists()  # the caller still owns it
    other = tmp_path / "other"
    _artifact(other, "ltau-md/is2rs-benchmark", "old")
    with pytest.raises(OutputExistsError, match="another kind"):
        replace_dir(tmp, other)
    assert (other / "payload.txt").read_text() == "old"
    # no manifest in the new directory: an existing non-empty final is refused
    bare = tmp_path / ".bare.tmp"
    bare.mkdir()
    (bare / "x").write_text("x")
    with pytest.raises(OutputExistsError, match="no manifest"):
        replace_dir(bare, other)
    assert (other / "payload.txt").read_text() == "old"


def test_replace_dir_replaces_same_format_missing_and_empty(tmp_path):
    final = _artifact(tmp_path / "final", "ltau-md/estimator", "old")
    (final / "old_only.txt").write_text("gone after replace")
    replace_dir(_artifact(tmp_path / ".t1", "ltau-md/estimator", "new"), final)
    assert _listing(final) == ["manifest.json", "payload.txt"]
    assert (final / "payload.txt").read_text() == "new"
    replace_dir(_artifact(tmp_path / ".t2", "f"), tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    replace_dir(_artifact(tmp_path / ".t3", "f"), tmp_path / "empty")
    assert (tmp_path / "empty" / "payload.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "final", "missing"]


def test_estimator_save_refuses_foreign_dir_but_replaces_an_estimator(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20, 3)).astype(np.float32)
    log = ErrorLog.create(tmp_path / "log", species=np.full(20, 29),
                          frame_offsets=np.array([0, 10, 20]), ref_force_norm=np.ones(20))
    for _ in range(3):
        log.append(rng.lognormal(-3, 0.5, 20))
    est = LTAUEstimator(k=3).fit(x, log)
    d = tmp_path / "est"
    note = _plant(d)
    with pytest.raises(OutputExistsError):
        est.save(d)
    assert _listing(d) == ["notes.txt"] and note.read_text() == "my notes, keep me"
    est.save(tmp_path / "e2")
    first = (tmp_path / "e2" / "manifest.json").read_text()
    est.save(tmp_path / "e2")  # an estimator replaces an estimator
    assert json.loads((tmp_path / "e2" / "manifest.json").read_text())["format"] == \
        json.loads(first)["format"]
    assert LTAUEstimator.load(tmp_path / "e2").n_train_ == 20
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_atomic_dir_all_or_nothing(tmp_path):
    final = tmp_path / "out"
    with atomic_dir(final, "demo-data") as tmp:
        assert tmp.parent == tmp_path and tmp != final
        (tmp / "a.txt").write_text("1")
        assert not final.exists()
    assert _listing(final) == sorted([MARKER, "a.txt"]) and output_kind(final) == "demo-data"
    # a failure leaves the previous output untouched and no temporary directory behind
    with pytest.raises(RuntimeError), atomic_dir(final, "demo-data", overwrite=True) as tmp:
        (tmp / "b.txt").write_text("2")
        raise RuntimeError("boom")
    assert _listing(final) == sorted([MARKER, "a.txt"])
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    # refused before any work: existing output without overwrite, or of another kind
    with pytest.raises(OutputExistsError, match="exists"), atomic_dir(final, "demo-data"):
        pytest.fail("the body must not run")
    with pytest.raises(OutputExistsError, match="another kind"), \
            atomic_dir(final, "other", overwrite=True):
        pytest.fail("the body must not run")
    with atomic_dir(final, "demo-data", overwrite=True) as tmp:
        (tmp / "b.txt").write_text("2")
    assert _listing(final) == sorted([MARKER, "b.txt"])


def test_generate_benchmark_refuses_foreign_dir_even_with_overwrite(tmp_path):
    from ltau_md.workflows.is2rs.generate import GeneratorConfig, generate_benchmark

    cfg = GeneratorConfig(metals=("Cu",), facets=("fcc100",), ood_facets=(),
                          id_adsorbates=("H",), ood_pairs=(), frames_per_system=2)
    d = tmp_path / "bench"
    note = _plant(d)
    with pytest.raises(OutputExistsError):
        generate_benchmark(d, n_train=1, n_val=0, cfg=cfg, splits=("train",), overwrite=True,
                           progress=False)
    assert _listing(d) == ["notes.txt"] and note.read_text() == "my notes, keep me"
    assert [p.name for p in tmp_path.iterdir()] == ["bench"]
    good = tmp_path / "good"
    m1 = generate_benchmark(good, seed=1, n_train=1, n_val=0, cfg=cfg, splits=("train",),
                            progress=False)
    with pytest.raises(OutputExistsError, match="exists"):
        generate_benchmark(good, seed=2, n_train=1, n_val=0, cfg=cfg, splits=("train",),
                           progress=False)
    m2 = generate_benchmark(good, seed=2, n_train=1, n_val=0, cfg=cfg, splits=("train",),
                            overwrite=True, progress=False)
    assert json.loads((good / "manifest.json").read_text())["seed"] == 2 != m1["seed"]
    assert m2["files"] == json.loads((good / "manifest.json").read_text())["files"]


def test_run_demo_refuses_foreign_and_other_kind_before_any_work(tmp_path):
    from ltau_md.workflows.demo import run_demo

    d = tmp_path / "demo"
    note = _plant(d)
    for overwrite in (False, True):
        with pytest.raises(OutputExistsError):
            run_demo(d, quick=True, progress=False, overwrite=overwrite)
    assert _listing(d) == ["notes.txt"] and note.read_text() == "my notes, keep me"
    md = prepare_output_dir(tmp_path / "md", "md")
    (md / "steps.jsonl").write_text("")
    with pytest.raises(OutputExistsError, match="another kind"):
        run_demo(md, quick=True, progress=False, overwrite=True)
    assert _listing(md) == sorted([MARKER, "steps.jsonl"])


# ---------------------------------------------------------------- permissions
@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_files_and_dirs_follow_the_umask(tmp_path, umask, mask):
    umask(mask)
    assert current_umask() == mask
    # independent reference: what a plain open() and mkdir() give under this umask
    ref_file = tmp_path / "plain.txt"
    ref_file.write_text("x")
    (tmp_path / "plain_dir").mkdir()
    assert _mode(ref_file) == 0o666 & ~mask
    write_json_atomic(tmp_path / "a.json", {"a": 1})
    write_text_atomic(tmp_path / "report.html", "<html></html>")
    assert _mode(tmp_path / "a.json") == _mode(ref_file)
    assert _mode(tmp_path / "report.html") == _mode(ref_file)
    with atomic_dir(tmp_path / "art", "x") as tmp:
        assert _mode(tmp) == _mode(tmp_path / "plain_dir")
    assert _mode(tmp_path / "art") == _mode(tmp_path / "plain_dir") == 0o777 & ~mask
    assert _mode(tmp_path / "art" / MARKER) == _mode(ref_file)
    d = prepare_output_dir(tmp_path / "run", "md")
    assert _mode(d) == 0o777 & ~mask and _mode(d / MARKER) == 0o666 & ~mask
    # replace_dir with a mkdtemp directory (as the estimator's save does)
    import tempfile

    t = tempfile.mkdtemp(dir=tmp_path)
    write_json_atomic(os.path.join(t, "manifest.json"), {"format": "f"})
    replace_dir(t, tmp_path / "est")
    assert _mode(tmp_path / "est") == 0o777 & ~mask


def test_mark_output_dir_then_resume_rules(tmp_path):
    d = tmp_path / "c"
    d.mkdir()
    (d / "campaign.json").write_text("{}")
    mark_output_dir(d, "is2rs")
    assert output_kind(d) == "is2rs"
    with pytest.raises(OutputExistsError):
        prepare_output_dir(d, "is2rs")
