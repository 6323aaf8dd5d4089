"""IS2RS campaign with a real LTAU calculator (EMT FeatureModel + FAISS estimator): serial run
equals a 2-worker dask LocalCluster run, interrupted campaigns resume without recomputing, and
the analysis (Spearman, AUROC, isotonic map, figure) on hand-checked inputs."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from ase.calculators.emt import EMT
from ase.io import read

from ltau_md.core.calculator import LTAUCalculator
from ltau_md.core.errorlog import ErrorLog
from ltau_md.core.estimator import LTAUEstimator
from ltau_md.core.exceptions import ArtifactError, DataError, OutputExistsError
from ltau_md.core.files import MARKER
from ltau_md.core.plots import save_figure
from ltau_md.integrations.nequip import load_calculator
from ltau_md.testing import EMTFeatureModel
from ltau_md.workflows.is2rs.analysis import (
    UQToRMSD,
    analyze,
    failure_labels,
    isotonic_fit,
)
from ltau_md.workflows.is2rs.data import load_systems
from ltau_md.workflows.is2rs.figures import plot_uq_vs_rmsd
from ltau_md.workflows.is2rs.generate import GeneratorConfig, generate_benchmark
from ltau_md.workflows.is2rs.metrics import FREE_TAGS, rmsd
from ltau_md.workflows.is2rs.runner import RelaxSettings, result_path, run_campaign

ELEMENTS = ("H", "C", "N", "O", "Al", "Ni", "Cu", "Pd", "Ag", "Pt", "Au")
CFG = GeneratorConfig(frames_per_system=8, val_frames_per_system=2)


@dataclass(frozen=True)
class EMTLTAUFactory:
    """Picklable calc_factory: EMT FeatureModel + an estimator loaded from disk."""

    estimator_dir: str

    def __call__(self) -> LTAUCalculator:
        return LTAUCalculator(EMTFeatureModel(ELEMENTS), LTAUEstimator.load(self.estimator_dir))


@dataclass(frozen=True)
class InterruptingFactory:
    """EMT that raises KeyboardInterrupt at its ``after``-th force evaluation (a Ctrl-C)."""

    after: int

    def __call__(self):
        after = self.after

        class _EMT(EMT):
            n = 0

            def calculate(self, *args, **kwargs):
                _EMT.n += 1
                if _EMT.n >= after:
                    raise KeyboardInterrupt
                super().calculate(*args, **kwargs)

        return _EMT()


@pytest.fixture(scope="module")
def campaign_setup(tmp_path_factory):
    """2 training systems and one system per validation split; the estimator is fitted on
    the frames of every split (so that it knows every element; this test is about the runner,
    not about OOD detection) with logged errors that grow with |F_ref|."""
    root = tmp_path_factory.mktemp("is2rs_campaign")
    bench = root / "bench"
    generate_benchmark(bench, seed=3, n_train=2, n_val=1, cfg=CFG, progress=False)
    frames = [a for f in sorted(bench.glob("*/frames.extxyz")) for a in read(f, index=":")]
    model = EMTFeatureModel(ELEMENTS)
    x = np.concatenate([model.evaluate(a).features for a in frames])
    fref = np.concatenate([np.linalg.norm(a.get_forces(), axis=1) for a in frames])
    offs = np.cumsum([0] + [len(a) for a in frames])
    log = ErrorLog.create(root / "log", species=np.concatenate([a.numbers for a in frames]),
                          frame_offsets=offs, ref_force_norm=fref)
    rng = np.random.default_rng(0)
    for epoch in range(8):
        log.append((0.02 + 0.3 * fref) * rng.lognormal(0, 0.3, len(x)) * (1 + np.exp(-epoch)))
    LTAUEstimator(k=5).fit(x, log).save(root / "est")
    systems = load_systems(bench, splits=["val_id", "val_ood_ads", "val_ood_cat",
                                          "val_ood_both"])
    return root, systems, EMTLTAUFactory(str(root / "est"))


def _strip(results):
    timings = ("wall_s", "ref_wall_s", "trajectory_reference_s")
    return [{k: v for k, v in r.items() if k not in timings} for r in results]


def test_serial_equals_dask_localcluster(campaign_setup, tmp_path):
    root, systems, factory = campaign_setup
    settings = RelaxSettings(fmax=0.05, steps=200, optimizer="FIRE")
    serial = run_campaign(systems, factory, tmp_path / "serial", settings, n_workers=0,
                          progress=False)
    dask = run_campaign(systems, factory, tmp_path / "dask", settings, n_workers=2,
                        progress=False)
    assert [r["sid"] for r in serial] == [s.sid for s in systems]
    assert all(r["status"] == "ok" for r in serial), [r.get("error") for r in serial]
    assert _strip(serial) == _strip(dask)
    for s, r in zip(systems, serial, strict=True):
        # the saved final positions reproduce the reported RMSD (independent recomputation)
        pred = s.initial.copy()
        pred.positions = np.array(r["positions"])
        assert r["rmsd"] == pytest.approx(rmsd(pred, s.relaxed), abs=1e-12)
        # independent recomputation: a fresh calculator (cold, exact search) on the initial
        # structure and on the saved final positions gives the initial and final max and
        # mean uncertainty
        free = np.isin(s.initial.get_tags(), FREE_TAGS)
        for key, mean_key, atoms in (
                ("uncertainty:max/initial", "uncertainty:mean/initial", s.initial.copy()),
                ("uncertainty:max/final", "uncertainty:mean/final", pred)):
            atoms.calc = factory()
            atoms.get_forces()
            u = atoms.calc.results["uncertainty"][free]
            assert r[key] == pytest.approx(float(u.max()), abs=1e-6), key
            assert r[mean_key] == pytest.approx(float(u.mean()), abs=1e-6)
        assert (max(r["uncertainty:max/initial"], r["uncertainty:max/final"])
                <= r["uncertainty:max/max"] <= 1.0)
        assert min(r["uq_series"]) <= r["uncertainty:max/mean"] <= r["uncertainty:max/max"]
        assert r["n_uq_steps"] == r["n_steps"] + 1 == len(r["uq_series"])
        assert math.isfinite(r["predicted_error:max/max"])
        # latent novelty from the calculator, over all atoms and over the adsorbate atoms
        assert math.isfinite(r["novelty:max@tags=0,1,2/max"])
        assert r["novelty:max@tags=2/max"] <= r["novelty:max@tags=0,1,2/max"]
        assert r["novelty:max@tags=2/max"] >= r["novelty:max@tags=2/mean"] > 0
        assert r["uncertainty:max@tags=2/max"] <= r["uncertainty:max/max"]
        # the reference (EMT) scored the end point; the EMT FeatureModel is EMT, so the true
        # force error along the trajectory is zero and the end point is a reference minimum
        # (FIRE may find another minimum than the generator's BFGS: any basin outcome)
        assert r["force_error:max/max"] == pytest.approx(0.0, abs=1e-9)
        assert r["ref_fmax_at_end"] < 0.05 + 1e-9
        assert r["energy_above_min"] == pytest.approx(
            r["ref_energy_at_end"] - min(r["ref_energy_given"], r["rerelax_energy"])
            if r["basin"] == "lower" else r["ref_energy_at_end"] - r["ref_energy_given"])
        if r["basin"] == "higher":
            assert r["rerelax_energy"] > r["ref_energy_given"] + 0.02
    # one JSON per system, plain JSON (no NaN tokens)
    for s in systems:
        json.loads(result_path(tmp_path / "dask", s.sid).read_text())


def test_interrupted_campaign_resumes_without_recomputing(campaign_setup, tmp_path):
    root, systems, _ = campaign_setup
    out = tmp_path / "camp"
    settings = RelaxSettings(steps=200)
    # a Ctrl-C in the middle of the campaign: finished systems are already on disk
    n_evals = [0]
    for s in systems[:2]:
        a = s.initial.copy()
        a.calc = EMT()
        from ase.optimize import BFGS

        opt = BFGS(a, logfile=None)
        opt.run(fmax=0.05, steps=200)
        n_evals[0] += opt.nsteps + 1
    with pytest.raises(KeyboardInterrupt):
        run_campaign(systems, InterruptingFactory(after=n_evals[0] + 3), out, settings,
                     n_workers=0, progress=False)
    done = {s.sid: result_path(out, s.sid) for s in systems if result_path(out, s.sid).exists()}
    assert 1 <= len(done) < len(systems)
    before = {sid: (p.stat().st_mtime_ns, p.read_bytes()) for sid, p in done.items()}
    time.sleep(0.01)
    results = run_campaign(systems, EMT, out, settings, n_workers=0, progress=False)
    assert all(r["status"] == "ok" for r in results)
    for sid, (mtime, content) in before.items():
        p = result_path(out, sid)
        assert p.stat().st_mtime_ns == mtime and p.read_bytes() == content  # not recomputed
    assert all(result_path(out, s.sid).exists() for s in systems)
    # a third run recomputes nothing: every file keeps its mtime
    mtimes = {s.sid: result_path(out, s.sid).stat().st_mtime_ns for s in systems}
    again = run_campaign(systems, InterruptingFactory(after=1), out, settings, n_workers=0,
                         progress=False)
    assert _strip(again) == _strip(results)
    assert mtimes == {s.sid: result_path(out, s.sid).stat().st_mtime_ns for s in systems}
    # other settings in the same directory are refused; resume=False recomputes
    with pytest.raises(ArtifactError, match="fmax"):
        run_campaign(systems, EMT, out, RelaxSettings(fmax=0.1), n_workers=0, progress=False)
    assert mtimes == {s.sid: result_path(out, s.sid).stat().st_mtime_ns for s in systems}


def test_resume_false_starts_over_and_foreign_dirs_are_refused(campaign_setup, tmp_path):
    _, systems, _ = campaign_setup
    out = tmp_path / "camp"
    first = run_campaign(systems, EMT, out, RelaxSettings(steps=200), n_workers=0,
                         progress=False)
    (out / "results" / "stale-extra.json").write_text("{}")
    time.sleep(0.01)
    t0 = time.time_ns()
    # resume=False with other settings and fewer systems: a fresh campaign, nothing kept
    settings = RelaxSettings(fmax=0.1, steps=200)
    again = run_campaign(systems[:2], EMT, out, settings, resume=False, n_workers=0,
                         progress=False)
    assert sorted(p.name for p in (out / "results").iterdir()) == sorted(
        result_path(out, s.sid).name for s in systems[:2])
    assert json.loads((out / "campaign.json").read_text())["settings"]["fmax"] == 0.1
    for s, r in zip(systems[:2], again, strict=True):
        assert result_path(out, s.sid).stat().st_mtime_ns >= t0  # recomputed
        assert r["settings"]["fmax"] == 0.1 and r["status"] == "ok"
        # an independent EMT relaxation with the new settings gives the same end point
        a = s.initial.copy()
        a.calc = EMT()
        from ase.optimize import BFGS

        BFGS(a, logfile=None).run(fmax=0.1, steps=200)
        np.testing.assert_allclose(r["positions"], a.positions, atol=1e-8)
    assert first[0]["settings"]["fmax"] == 0.05
    # a foreign non-empty directory is refused (resume or not) and left untouched
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    for resume in (True, False):
        with pytest.raises(OutputExistsError, match="not written by ltau-md"):
            run_campaign(systems[:1], EMT, foreign, n_workers=0, resume=resume,
                         progress=False)
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]
    assert (foreign / "notes.txt").read_text() == "keep me"
    # a campaign written before output markers (campaign.json only) still resumes
    old = tmp_path / "old"
    run_campaign(systems[:1], EMT, old, settings, n_workers=0, progress=False)
    (old / MARKER).unlink()
    # ... and one written before a setting existed (error_stride) resumes at its default
    for path in (old / "campaign.json", result_path(old, systems[0].sid)):
        stored = json.loads(path.read_text())
        del stored["settings"]["error_stride"]
        path.write_text(json.dumps(stored))
    mtime = result_path(old, systems[0].sid).stat().st_mtime_ns
    run_campaign(systems[:1], EMT, old, settings, n_workers=0, progress=False)
    assert result_path(old, systems[0].sid).stat().st_mtime_ns == mtime
    with pytest.raises(ArtifactError, match="error_stride"):  # but not at another value
        run_campaign(systems[:1], EMT, old, RelaxSettings(fmax=0.1, steps=200, error_stride=2),
                     n_workers=0, progress=False)


def test_error_results_are_recorded_and_retried(campaign_setup, tmp_path):
    _, systems, _ = campaign_setup

    def bad_factory():
        return LTAUCalculator(EMTFeatureModel(("Cu", "O")),
                              LTAUEstimator.load(campaign_setup[0] / "est"))

    res = run_campaign(systems[:2], bad_factory, tmp_path / "c", n_workers=0, progress=False)
    assert all(r["status"] == "error" for r in res)
    assert "SpeciesError" in res[0]["error"] or "unknown" in res[0]["error"]
    res = run_campaign(systems[:2], EMT, tmp_path / "c", n_workers=0, progress=False)
    assert all(r["status"] == "ok" for r in res)


def test_isotonic_fit_hand_case():
    x, y = isotonic_fit([1, 2, 3, 4, 5], [1.0, 3.0, 2.0, 4.0, 3.0])
    # PAVA pools (3, 2) -> 2.5 and (4, 3) -> 3.5
    np.testing.assert_allclose(x, [1, 2, 3, 4, 5])
    np.testing.assert_allclose(y, [1.0, 2.5, 2.5, 3.5, 3.5])
    m = UQToRMSD().fit([1, 2, 3, 4, 5], [1.0, 3.0, 2.0, 4.0, 3.0])
    np.testing.assert_allclose(m.predict([0.0, 1.5, 6.0]), [1.0, 1.75, 3.5])
    with pytest.raises(DataError):
        UQToRMSD().fit([1.0], [1.0])


def _fake(split, uq, r, i):
    return {"sid": f"{split}-{i}", "split": split, "status": "ok", "rmsd": r,
            "mean_distance": r, "converged": True, "uncertainty:max/initial": uq,
            "uncertainty:max/final": uq, "uncertainty:max/max": uq, "uncertainty:max/mean": uq}


def test_analyze_hand_case(tmp_path):
    # val_id: uncertainty ranks RMSD perfectly; OOD: reversed
    res = [_fake("val_id", u, r, i) for i, (u, r) in
           enumerate([(0.1, 0.05), (0.2, 0.1), (0.3, 0.6), (0.4, 0.9)])]
    res += [_fake("val_ood_ads", u, r, i) for i, (u, r) in
            enumerate([(0.1, 0.9), (0.2, 0.6), (0.3, 0.1), (0.4, 0.05)])]
    res.append({"sid": "bad", "split": "val_id", "status": "error", "error": "boom"})
    rep = analyze(res, rmsd_threshold=0.5)
    vid, ood = rep["splits"]["val_id"], rep["splits"]["val_ood_ads"]
    assert rep["n_errors"] == 1 and vid["n"] == 5 and vid["n_ok"] == 4
    assert vid["spearman"]["uncertainty:max/max"] == pytest.approx(1.0)
    assert ood["spearman"]["uncertainty:max/max"] == pytest.approx(-1.0)
    # failures (0.6, 0.9) score highest
    assert vid["auroc"]["uncertainty:max/max"] == pytest.approx(1.0)
    assert ood["auroc"]["uncertainty:max/max"] == pytest.approx(0.0)
    assert vid["failure_rate"] == pytest.approx(0.5)
    # ADwT: 0.05 < t for t in 0.051..0.499 (449), 0.1: 0.101..0.499 (399) -> 848 / (4 * 490)
    assert vid["adwt"] == pytest.approx((449 + 399) / 1960, abs=1e-3)
    assert vid["uq_to_rmsd"]["mae"] == pytest.approx(0.0, abs=1e-12)  # fitted on val_id
    assert rep["splits"]["ood"]["n"] == 4
    # OOD detection: uncertainty 0.1..0.4 in both splits -> ties everywhere, AUROC 0.5; a
    # statistic that is larger on every OOD system separates them perfectly
    assert rep["ood_detection"]["uncertainty:max/max"]["value"] == pytest.approx(0.5)
    sep = [{**r, "uncertainty:max/initial": (1.0 if r["split"] != "val_id" else 0.0)}
           for r in res if r["status"] == "ok"]
    assert analyze(sep)["ood_detection"]["uncertainty:max/initial"]["value"] == pytest.approx(1.0)
    # no uncertainty at all (plain EMT): NaN correlations, no crash
    nan = [{**r, "uncertainty:max/max": float("nan")} for r in res if r["status"] == "ok"]
    assert analyze(nan)["splits"]["val_id"]["spearman"]["uncertainty:max/max"] is None
    # IS2RE: |energy error| MAE and the share within 0.02 eV (OC20's EwT), by hand
    e = {"val_id": [0.01, -0.015, 0.05, float("nan")]}
    rows = [{**r, "is2re_error": e["val_id"][int(r["sid"].split("-")[-1])]}
            for r in res if r["split"] == "val_id" and r["status"] == "ok"]
    vid = analyze(rows)["splits"]["val_id"]
    assert vid["is2re_mae"] == pytest.approx((0.01 + 0.015 + 0.05) / 3)
    assert vid["is2re_ewt"] == pytest.approx(2 / 4)  # a missing energy counts as outside
    assert "is2re_mae" not in rep["splits"]["val_id"]
    # the binned means carry standard errors (std / sqrt(n), ddof 1)
    b = rep["splits"]["val_id"]["binned"]["uncertainty:max/max"]
    for mean, se, n in zip(b["mean_rmsd"], b["se_rmsd"], b["count"], strict=True):
        assert (se is None) == (n < 2) and (mean is None) == (n == 0)
    from ltau_md.workflows.is2rs._columns import binned_means

    hand = binned_means(np.array([0.0, 0.1, 0.2, 0.9]), np.array([1.0, 2.0, 4.0, 8.0]),
                        np.array([0.0, 0.5, 1.0]))
    assert hand["count"] == [3, 1] and hand["mean_rmsd"] == pytest.approx([7 / 3, 8.0])
    assert hand["se_rmsd"][0] == pytest.approx(np.std([1, 2, 4], ddof=1) / np.sqrt(3))
    assert hand["se_rmsd"][1] is None
    # another split (the real-DFT val_dft) is drawn as its own group
    dft = [{**_fake("val_dft", u, r, i), "sid": f"dft-{i}"} for i, (u, r) in
           enumerate([(0.1, 0.2), (0.3, 0.7)])]
    fig = plot_uq_vs_rmsd(res + dft)
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels == ["ID (val_id) (n=4)", "OOD (val_ood_*) (n=4)", "val_dft (n=2)"]
    png = save_figure(plot_uq_vs_rmsd(res), tmp_path / "fig.png")
    assert png.stat().st_size > 10_000 and png.read_bytes()[:4] == b"\x89PNG"


def test_failure_labels_hand_case():
    rows = [
        {"rmsd": 0.2, "mean_distance": 0.1, "energy_above_min": 0.0, "ref_fmax_at_end": 0.03,
         "basin": "same"},
        {"rmsd": 0.7, "mean_distance": 0.3, "energy_above_min": 0.3, "ref_fmax_at_end": 0.2,
         "basin": "higher"},
        {"rmsd": 0.3, "mean_distance": 0.6, "energy_above_min": 0.05, "ref_fmax_at_end": 0.5,
         "basin": "lower"},
        {"rmsd": float("nan"), "mean_distance": float("nan"), "energy_above_min": float("nan"),
         "ref_fmax_at_end": float("nan"), "basin": "blown_up"},
    ]
    lab = failure_labels(rows, rmsd_threshold=0.5)
    assert lab["rmsd"].tolist() == [False, True, False, True]
    # on ADwT's quantity: one far atom fails the RMSD, many slightly moved atoms the mean
    assert lab["mean_distance"].tolist() == [False, False, True, True]
    assert lab["energy"].tolist() == [False, True, False, True]
    assert lab["not_fbt"].tolist() == [False, True, True, True]
    assert lab["basin"].tolist() == [False, True, True, True]
    assert lab["higher_or_fmax"].tolist() == [False, True, True, True]


def test_cli_generate(tmp_path, capsys):
    from ltau_md.cli import main

    out = tmp_path / "gen"
    assert main(["is2rs-generate", "--out", str(out), "--n-train", "1", "--n-val", "1",
                 "--splits", "train", "val_ood_ads", "--seed", "4", "--no-progress"]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {k: v["systems"] for k, v in printed.items()} == {"train": 1, "val_ood_ads": 1}
    manifest = json.loads((out / "manifest.json").read_text())
    for split, v in printed.items():  # the cost of the reference, as the manifest counts it
        assert v["reference_calls"] == manifest["splits"][split]["reference_calls"] > 0
        assert v["attempts"] >= 1
    assert {s.split for s in load_systems(out)} == {"train", "val_ood_ads"}
    assert (tmp_path / "gen.cache").is_dir()
    assert main(["is2rs-generate", "--out", str(out), "--n-train", "1", "--n-val", "1"]) == 2
    assert "exists" in capsys.readouterr().err
    assert main(["is2rs-generate", "--out", str(tmp_path / "x"), "--reference", "EMT"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "import path" in err[0]
    assert not (tmp_path / "x").exists() and not (tmp_path / "x.cache").exists()


@pytest.mark.slow
def test_campaign_with_tiny_nequip_model(tiny_run, tmp_path):
    """Real tiny NequIP (H, O, Cu) + its LTAU estimator through the dask runner."""
    import functools

    cfg = GeneratorConfig(metals=("Cu",), id_adsorbates=("H", "O", "OH"),
                          ood_adsorbates=("H",), ood_pairs=(), facets=("fcc111", "fcc100"),
                          ood_facets=())
    bench = tmp_path / "bench"
    generate_benchmark(bench, seed=0, n_train=0, n_val=3, cfg=cfg,
                       splits=("val_id", "val_ood_ads"), progress=False)
    systems = load_systems(bench)
    factory = functools.partial(load_calculator, model=str(tiny_run.model_path),
                                estimator=str(tiny_run.estimator_dir))
    settings = RelaxSettings(steps=60)
    serial = run_campaign(systems, factory, tmp_path / "s", settings, n_workers=0,
                          progress=False)
    dask = run_campaign(systems, factory, tmp_path / "d", settings, n_workers=2, progress=False)
    assert all(r["status"] == "ok" for r in serial), [r.get("error") for r in serial]
    for a, b in zip(serial, dask, strict=True):
        assert a["n_steps"] == b["n_steps"]
        assert a["rmsd"] == pytest.approx(b["rmsd"], abs=1e-5)
        assert 0.0 <= a["uncertainty:max/max"] <= 1.0
    rep = analyze(serial)
    assert rep["n_ok"] == len(systems)
    assert Path(tmp_path / "s" / "campaign.json").exists()
    # the same campaign through the CLI resumes from the serial results (no recomputation)
    from ltau_md.cli import main

    mtimes = {s.sid: result_path(tmp_path / "s", s.sid).stat().st_mtime_ns for s in systems}
    assert main(["is2rs", "--model", str(tiny_run.model_path), "--estimator",
                 str(tiny_run.estimator_dir), "--systems", str(bench), "--out",
                 str(tmp_path / "s"), "--workers", "0", "--steps", "60",
                 "--no-progress"]) == 0
    assert mtimes == {s.sid: result_path(tmp_path / "s", s.sid).stat().st_mtime_ns
                      for s in systems}
    report = json.loads((tmp_path / "s" / "report.json").read_text())
    assert report["n_ok"] == len(systems)
    assert (tmp_path / "s" / "uq_vs_rmsd.png").stat().st_size > 10_000
