"""``evaluate`` on a tiny EMT case whose out-of-domain sets are known (much hotter frames, another
lattice): the reported novelty AUROC is high and equals an independent numpy/scipy computation
from the same per-frame values; the report is strict JSON; ``ltau-md evaluate`` end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.singlepoint import SinglePointCalculator
from scipy.stats import mannwhitneyu, spearmanr

from ltau_md.core.calibration import DEFAULT_ALARM, DEFAULT_SIGNALS, split_frames
from ltau_md.core.errorlog import ErrorLog
from ltau_md.core.estimator import LTAUEstimator
from ltau_md.core.metrics import combined_statistics, fit_combined
from ltau_md.core.signals import SIGNAL_CLASSES, GMMDensity
from ltau_md.testing import EMTFeatureModel
from ltau_md.workflows.evaluation import evaluate

CU = ("Cu",)


class PerturbedEMT(EMTFeatureModel):
    """EMT with forces scaled and shifted by a smooth field: an ensemble member that
    disagrees with EMT by a known amount."""

    def __init__(self, scale, shift, **kw):
        super().__init__(**kw)
        self.scale, self.shift = scale, shift

    def evaluate(self, atoms, stress=False):
        out = super().evaluate(atoms, stress)
        out.forces = out.forces * self.scale + self.shift * np.sin(atoms.positions)
        return out


def _fcc(rattle, seed, a=3.6):
    at = bulk("Cu", "fcc", a=a, cubic=True).repeat((2, 2, 2))
    at.rattle(rattle, seed=seed)
    return at


def _bcc(seed):
    at = bulk("Cu", "bcc", a=2.87, cubic=True).repeat((2, 2, 2))
    at.rattle(0.05, seed=seed)
    return at


def _label(frames, model, noise, seed):
    """Reference forces = EMT + Gaussian noise (sigma eV/A per component)."""
    rng = np.random.default_rng(seed)
    for a in frames:
        out = model.evaluate(a)
        f = out.forces + rng.normal(0.0, noise, out.forces.shape)
        a.calc = SinglePointCalculator(a, energy=out.energy, forces=f)
    return frames


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("evaluate")
    model = EMTFeatureModel(elements=CU)
    train = [_fcc(0.05, 100 + i) for i in range(12)]
    feats = np.concatenate([model.evaluate(a).features for a in train])
    n = feats.shape[0]
    log = ErrorLog.create(tmp / "log", species=np.full(n, 29),
                          frame_offsets=np.arange(0, n + 1, 32), ref_force_norm=np.ones(n))
    rng = np.random.default_rng(0)
    base = rng.gamma(2.0, 0.03, n)
    for _ in range(6):
        log.append(base * rng.gamma(8.0, 1 / 8.0, n))
    est = LTAUEstimator(k=5, index="flat").fit(feats, log)
    in_domain = _label([_fcc(0.05, i) for i in range(24)], model, 0.04, 1)
    hot = [_fcc(0.3, 200 + i) for i in range(8)]  # energies only: no labels needed
    for a in hot:
        a.calc = SinglePointCalculator(a, energy=model.evaluate(a).energy)
    ood = {"hot": hot, "bcc": [_bcc(300 + i) for i in range(8)],
           "warm": _label([_fcc(0.12, 400 + i) for i in range(6)], model, 0.04, 2)}
    members = [PerturbedEMT(1.08, 0.03, elements=CU), PerturbedEMT(0.95, -0.02, elements=CU)]
    return tmp, model, est, in_domain, ood, members


def _novelty_max(model, est, frames):
    out = []
    for a in frames:
        pred = est.predict(model.evaluate(a).features, species=a.numbers)
        out.append(pred.novelty.max())
    return np.array(out)


def test_evaluate_novelty_auroc_matches_independent_computation(case):
    tmp, model, est, in_domain, ood, members = case
    before = est.calibration_
    rep = evaluate(model, est, in_domain, ood, members, fraction=0.5, seed=3, n_boot=50,
                   alarm_rate=0.1,
                   n_splits=20, timing=(1, 2))
    assert est.calibration_ is before  # the caller's estimator is untouched
    off = np.concatenate([[0], np.cumsum([len(a) for a in in_domain])])
    evl = split_frames(off, 0.5, seed=3)[1][off[:-1]]
    neg = _novelty_max(model, est, in_domain)[evl]
    for name, frames in ood.items():
        pos = _novelty_max(model, est, frames)
        want = mannwhitneyu(pos, neg).statistic / (pos.size * neg.size)
        got = rep["detection"][name]["novelty:max"]
        assert got["value"] == pytest.approx(want, abs=1e-12)
        assert got["value"] >= 0.95
        lo, hi = got["ci95"]
        assert lo <= got["value"] + 1e-12 and hi >= got["value"] - 1e-12
        assert rep["summary"]["ood_auroc"][name]["novelty:max"]["value"] == got["value"]
        np.testing.assert_allclose(rep["frame_values"][name]["novelty:max"], pos, rtol=1e-6)
    # per-atom Spearman of the element baseline (constant: undefined -> null) and of novelty
    assert rep["per_atom"]["element_error"]["spearman"]["value"] is None
    err = np.concatenate([np.linalg.norm(a.get_forces() - model.evaluate(a).forces, axis=1)
                          for a in in_domain])
    atoms_evl = np.repeat(evl, np.diff(off))
    nov = np.concatenate([est.predict(model.evaluate(a).features, species=a.numbers).novelty
                          for a in in_domain])
    assert rep["per_atom"]["novelty"]["spearman"]["value"] == pytest.approx(
        spearmanr(nov[atoms_evl], err[atoms_evl]).statistic, abs=1e-9)
    assert set(rep["per_atom_ood"]) == {"warm"}  # the only labelled out-of-domain set
    warm = ood["warm"]
    err_w = np.concatenate([np.linalg.norm(a.get_forces() - model.evaluate(a).forces, axis=1)
                            for a in warm])
    fstd = np.concatenate([np.sqrt(np.var([m.evaluate(a).forces for m in [model, *members]],
                                          axis=0).sum(1)) for a in warm])
    assert rep["per_atom_ood"]["warm"]["force_std"]["spearman"]["value"] == pytest.approx(
        spearmanr(fstd, err_w).statistic, abs=1e-9)
    assert set(rep["spread_calibration"]) == {"force_std"}  # the ensemble's spread, read as
    assert 0 <= rep["spread_calibration"]["force_std"]["miscalibration_area"] <= 1  # a Gaussian
    assert set(rep["signals"]) == {"uncertainty", "predicted_error", "novelty",
                                   "latent_distance", "element_error", "force_std",
                                   *SIGNAL_CLASSES}
    # a latent signal, fitted on the copy from the index's training descriptors, against
    # the same signal fitted here on the training features
    train_x = np.asarray(est.training_descriptors())
    gmm = GMMDensity().fit(train_x, est.summary_.species)
    want = [gmm.score(model.evaluate(a).features, a.numbers).max() for a in ood["bcc"]]
    np.testing.assert_allclose(rep["frame_values"]["bcc"]["gmm:max"], want, rtol=1e-9)
    # the default alarm (combined): references from the calibration frames only, which get
    # leave-one-frame-out values; out-of-domain frames against them
    key = rep["summary"]["default_alarm"]
    assert key == DEFAULT_ALARM and rep["ranking"] and key in rep["alarms"]
    signal, on = key.split(":")
    cal = ~evl
    fitted = {n: SIGNAL_CLASSES[n]().fit(train_x, est.summary_.species) for n in DEFAULT_SIGNALS}

    def est_sig(a):
        x = model.evaluate(a).features
        return {n: f.score(x, a.numbers) for n, f in fitted.items()}
    parts = {n: np.concatenate([est_sig(a)[n] for a in in_domain]) for n in DEFAULT_SIGNALS}
    z = np.concatenate([a.numbers for a in in_domain])
    atoms_cal = np.repeat(cal, np.diff(off))
    off_cal = np.concatenate([[0], np.cumsum(np.diff(off)[cal])])
    ref, loo = fit_combined(signal, on, {n: v[atoms_cal] for n, v in parts.items()}, off_cal,
                            z[atoms_cal])
    np.testing.assert_allclose(np.asarray(rep["frame_values"]["in_domain"][key])[cal], loo,
                               rtol=1e-9)
    bcc = ood["bcc"]
    vb = [est_sig(a) for a in bcc]
    want = combined_statistics(signal, on, {n: np.concatenate([v[n] for v in vb])
                                            for n in DEFAULT_SIGNALS},
                               np.concatenate([[0], np.cumsum([len(a) for a in bcc])]), ref,
                               np.concatenate([a.numbers for a in bcc]))
    np.testing.assert_allclose(rep["frame_values"]["bcc"][key], want, rtol=1e-9)
    assert est.signals_ == {}                       # the caller's estimator gained nothing
    al = rep["alarms"]["novelty:max"]
    assert al["ood_rate"]["hot"] == 1.0 and 0 <= al["in_domain_rate"] <= 1
    assert al["in_domain_rate_splits"]["n_splits"] == 20
    # 12 calibration frames resolve 10 % but neither 1 % (needs 99) nor 5 % (needs 19): off,
    # with the reason and null rates, never 0.0
    assert al["off"] is False and al["reason"] is None
    for rate, need in (("0.01", 99), ("0.05", 19)):
        at = al["at_rate"][rate]
        assert at["off"] is True and at["threshold"] is None and at["in_domain_rate"] is None
        assert f"needs >= {need}" in at["reason"] and "resolve rates >= 0.0769" in at["reason"]
        assert set(at["ood_rate"]) == set(ood) and all(v is None for v in at["ood_rate"].values())
    # at 10 % (resolved) the out-of-domain rates are re-computable from the frame values
    thr = al["threshold"]
    for name in ood:
        want = np.mean(np.asarray(rep["frame_values"][name]["novelty:max"]) > thr)
        assert al["ood_rate"][name] == pytest.approx(want)
    ranked = [r["statistic"] for r in rep["ranking"]]
    assert sorted(ranked) == sorted(rep["alarms"]) and "gmm:q90" in ranked
    assert rep["calibration"]["area_fitted"] >= 0 and rep["calibration"]["s"] > 0
    assert rep["cost_per_step"]["ensemble_step_s"] > 0
    # each signal's own cost, the default alarm's combination (beyond its signals) too
    assert all(rep["cost_per_step"][f"{n}_s"] > 0 for n in (*SIGNAL_CLASSES, DEFAULT_ALARM))
    # and in the ranking: what watching each statistic adds to a step
    c = rep["cost_per_step"]
    row = {r["statistic"]: r["cost_per_step_s"] for r in rep["ranking"]}
    assert row["gmm:q90"] == c["gmm_s"] and row["novelty:max"] == c["ltau_query_s"]
    assert row["force_std:mean"] == pytest.approx(c["ensemble_step_s"] - c["model_s"])
    assert row[DEFAULT_ALARM] == pytest.approx(sum(c[f"{n}_s"] for n in (*DEFAULT_SIGNALS,
                                                                          DEFAULT_ALARM)))
    assert row["element_error:max"] is None                       # not timed: a look-up
    json.dumps(rep, allow_nan=False)  # strict JSON


def test_evaluate_cli_end_to_end(case, tmp_path, monkeypatch, capsys):
    from ase.io import write

    from ltau_md.cli import evaluate as cmd
    from ltau_md.cli import main

    _, model, est, in_domain, ood, members = case
    est_dir = est.save(tmp_path / "est")
    write(tmp_path / "in.xyz", in_domain, format="extxyz")
    write(tmp_path / "hot.xyz", ood["hot"], format="extxyz")
    write(tmp_path / "bcc.xyz", ood["bcc"], format="extxyz")
    models = {"m0": model, "m1": members[0]}
    monkeypatch.setattr(cmd, "load_model", lambda path, device, type_map=None: models[path])
    out = tmp_path / "report"
    argv = ["evaluate", "--model", "m0", "--estimator", str(est_dir), "--members", "m1",
            "--in-domain", str(tmp_path / "in.xyz"), "--ood", f"hot={tmp_path / 'hot.xyz'}",
            "--ood", f"bcc={tmp_path / 'bcc.xyz'}", "--out", str(out), "--n-boot", "20",
            "--seed", "1", "--timing-rounds", "1", "--alarm-stats", "gmm:q75", "--json",
            "--n-splits", "7"]
    assert main(argv) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    text = (out / "evaluation.json").read_text()
    rep = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict JSON {c}"))
    assert line["ood_auroc"]["bcc"]["novelty:max"]["value"] == pytest.approx(
        rep["detection"]["bcc"]["novelty:max"]["value"])
    assert "force_std" in rep["signals"]
    assert rep["settings"]["n_splits"] == 7
    for f in ("calibration.png", "error_vs_uncertainty.png", "roc_hot.png", "roc_bcc.png"):
        assert (out / f).stat().st_size > 0
    # per-atom values of every signal on the same frames, for scoring an outside method
    with np.load(out / "per_atom.npz") as z:
        assert list(z["sets"]) == ["in_domain", "hot", "bcc"]
        assert np.array_equal(z["bcc/offsets"], np.arange(0, 8 * 16 + 1, 16))
        nov = np.concatenate([est.predict(model.evaluate(a).features, species=a.numbers)
                              .novelty for a in ood["bcc"]])
        np.testing.assert_allclose(z["bcc/novelty"], nov, rtol=1e-6)
        assert "in_domain/abs_force_error" in z and "hot/abs_force_error" not in z
        assert z["in_domain/gmm"].shape == z["in_domain/numbers"].shape
        assert z["bcc/free"].all() and "bcc/tags" not in z     # no FixAtoms, no tags
    assert main(argv) == 2  # an earlier report is not replaced without --overwrite
    assert "overwrite" in capsys.readouterr().err
    # without --json: a short text a person reads, from the same report
    text = cmd.summary_text(rep, str(out))
    summ = rep["summary"]
    key = summ["default_alarm"]
    assert text.startswith(f"default alarm {key} at a nominal in-domain rate of 1.0 %")
    if summ["alarm_off_reason"]:
        assert f"  {summ['alarm_off_reason']}" in text
    else:
        assert f"bcc {100 * summ['alarm_rate_ood']['bcc']:.1f} %" in text
    assert f"bcc {rep['detection']['bcc'][key]['value']:.3f}" in text
    assert rep["settings"]["alarm_stats"] == ["gmm:q75"]
    assert cmd.ranking_table(rep["ranking"], also=("gmm:q75",)) in text
    first = rep["ranking"][0]                  # its row ends with the ms it adds per step
    line = next(x for x in text.splitlines() if x.startswith(f"  1 {first['statistic']} "))
    cost = first["cost_per_step_s"]
    assert line.endswith("     -" if cost is None else f"{1e3 * cost:6.2f}")
    assert "gmm:q75" in text and f"wrote {out}/" in text
    assert len(text) < 3000 and "{" not in text
    assert main(argv + ["--overwrite"]) == 0
    with pytest.raises(SystemExit) as exc:  # --ood without NAME=: argparse refuses it
        main(["evaluate", "--model", "m0", "--estimator", str(est_dir), "--in-domain",
              str(tmp_path / "in.xyz"), "--ood", "nameless", "--out", str(tmp_path / "x")])
    assert exc.value.code == 2 and not (tmp_path / "x").exists()
    for bad in ("gmm+", "gmm:q101"):  # a malformed statistic: argparse's one line
        with pytest.raises(SystemExit) as exc:
            main(["evaluate", "--model", "m0", "--estimator", str(est_dir), "--in-domain",
                  str(tmp_path / "in.xyz"), "--alarm-stats", bad, "--out", str(tmp_path / "x")])
        assert exc.value.code == 2 and not (tmp_path / "x").exists()
        assert "--alarm-stats" in capsys.readouterr().err
    # a statistic whose signal the run will not have: one line, exit 2, nothing written
    assert main(["evaluate", "--model", "m0", "--estimator", str(est_dir), "--in-domain",
                 str(tmp_path / "in.xyz"), "--alarm-stats", "force_std:max",
                 "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "force_std" in err[0] and not (tmp_path / "x").exists()


@pytest.mark.parametrize("kw,param", [
    ({"fraction": 1.0}, "fraction"), ({"fraction": 0}, "fraction"),
    ({"alarm_rate": 0.0}, "alarm_rate"), ({"alarm_rate": float("nan")}, "alarm_rate"),
    ({"n_boot": -1}, "n_boot"), ({"n_splits": 0}, "n_splits"), ({"batch_size": 0}, "batch_size"),
    ({"target_atol": -0.1}, "target_atol"), ({"seed": 1.5}, "seed"),
    ({"overwrite": "yes"}, "overwrite"),
])
def test_evaluate_checks_its_keyword_arguments_first(kw, param, tmp_path):
    """Declared constraints (EVALUATE_CONSTRAINTS): one InvalidParameterError naming the
    argument, before any model pass or output (``out`` is not created)."""
    from ltau_md.core.exceptions import InvalidParameterError
    from ltau_md.workflows.evaluation import EVALUATE_CONSTRAINTS

    assert param in EVALUATE_CONSTRAINTS
    with pytest.raises(InvalidParameterError, match=rf"^evaluate: {param} must"):
        evaluate(None, None, [], {}, out=tmp_path / "never", **kw)
    assert not (tmp_path / "never").exists()


def test_resolved_rates_carry_bootstrap_intervals_and_rank_by_the_1pct_rate(case):
    tmp, model, est, in_domain, ood, members = case
    rep = evaluate(model, est, in_domain, ood, fraction=0.85, seed=0, n_boot=40,
                   n_splits=5, timing=None, signals=())
    assert set(rep["signals"]) == {"uncertainty", "predicted_error", "novelty",
                                   "latent_distance", "element_error"}    # signals=(): none
    at5 = rep["alarms"]["novelty:max"]["at_rate"]["0.05"]                 # 20 frames: resolved
    assert at5["off"] is False and at5["n_calibration_frames"] == 20
    for name, (lo, hi) in at5["ood_rate_ci95"].items():
        assert 0 <= lo <= at5["ood_rate"][name] + 1e-12 <= hi + 2e-12 <= 1 + 2e-12
    assert rep["alarms"]["novelty:max"]["at_rate"]["0.01"]["off"] is True
    assert rep["summary"]["alarm_off_reason"] is None or "needs >= " in \
        rep["summary"]["alarm_off_reason"]


def test_an_interval_does_not_depend_on_what_else_is_scored(case):
    """Each figure draws its own bootstrap resamples: scoring one more signal and one more
    statistic leaves every other figure's interval (per atom, detection, alarm rates) as it
    was, while another seed moves them."""
    tmp, model, est, in_domain, ood, members = case
    kw = dict(fraction=0.85, n_boot=40, n_splits=5, timing=None)
    few = evaluate(model, est, in_domain, ood, seed=0, signals=(), **kw)
    more = evaluate(model, est, in_domain, ood, seed=0, signals=("llpr",),
                    alarm_stats=("novelty:q50",), **kw)
    other = evaluate(model, est, in_domain, ood, seed=1, signals=(), **kw)
    assert "llpr" in more["signals"] and "llpr" not in few["signals"]

    def intervals(rep):
        keys = [k for k in few["alarms"]]  # the statistics both reports score
        out = {("per_atom", n, m): rep["per_atom"][n][m]["ci95"] for n in few["per_atom"]
               for m in ("spearman", "high_error_auroc")}
        out.update({("detection", s, k): rep["detection"][s][k]["ci95"]
                    for s in ood for k in keys})
        out.update({("alarm", k): rep["alarms"][k]["at_rate"]["0.05"].get("ood_rate_ci95")
                    for k in keys})
        return out

    got, want = intervals(more), intervals(few)
    assert len(want) > 50 and any(v != [1.0, 1.0] for v in want.values())
    assert got == want
    assert intervals(other) != want


def test_refused_input_leaves_no_output_directory(case, tmp_path):
    from ltau_md.core.exceptions import DataError

    tmp, model, est, in_domain, ood, members = case
    out = tmp_path / "report"
    with pytest.raises(DataError, match="at least 4"):
        evaluate(model, est, in_domain[:1], {"bcc": ood["bcc"]}, timing=None, signals=(),
                 out=out)
    assert not out.exists()                  # no marker, no directory left behind


def test_statistics_asked_for_are_scored_and_ranked_like_the_others(case):
    """``alarm_stats``: a quantile no default names and a combination other than the default's,
    each computed independently here (numpy's quantile of an independently fitted GMM;
    fit_combined of independently fitted signals: leave-one-frame-out values on the
    calibration frames), detected, alarmed and ranked."""
    from ltau_md.core.calibration import split_frames

    tmp, model, est, in_domain, ood, members = case
    combo = "doptimality+clustered_doptimality/element:max"
    rep = evaluate(model, est, in_domain, ood, fraction=0.5, seed=2, n_boot=0, n_splits=5,
                   timing=None, signals=("gmm", "doptimality", "clustered_doptimality"),
                   alarm_stats=["gmm:q75", combo, "gmm:q75"])
    assert rep["settings"]["alarm_stats"] == ["gmm:q75", combo]
    train_x = np.asarray(est.training_descriptors())
    fitted = {n: SIGNAL_CLASSES[n]().fit(train_x, est.summary_.species)
              for n in ("gmm", "doptimality", "clustered_doptimality")}
    parts = {n: np.concatenate([f.score(model.evaluate(a).features, a.numbers)
                                for a in in_domain]) for n, f in fitted.items()}
    off = np.concatenate([[0], np.cumsum([len(a) for a in in_domain])])
    want = [np.quantile(parts["gmm"][a:b], 0.75) for a, b in zip(off[:-1], off[1:], strict=True)]
    np.testing.assert_allclose(rep["frame_values"]["in_domain"]["gmm:q75"], want, rtol=1e-9)
    cal = ~split_frames(off, 0.5, seed=2)[1][off[:-1]]
    atoms_cal = np.repeat(cal, np.diff(off))
    z = np.concatenate([a.numbers for a in in_domain])
    _, loo = fit_combined(combo.split(":")[0], "max", {n: v[atoms_cal] for n, v in parts.items()},
                          np.concatenate([[0], np.cumsum(np.diff(off)[cal])]), z[atoms_cal])
    np.testing.assert_allclose(np.asarray(rep["frame_values"]["in_domain"][combo])[cal], loo,
                               rtol=1e-9)
    ranked = [r["statistic"] for r in rep["ranking"]]
    for key in ("gmm:q75", combo):
        assert key in ranked and key in rep["alarms"] and key in rep["detection"]["bcc"]
        assert rep["detection"]["hot"][key]["value"] > 0.5  # much hotter frames stand out


def test_a_combination_with_an_ltau_part_is_scored_and_its_cost_left_untimed(case):
    """The cost timing covers combinations of latent signals; one with a part LTAU's query
    gives (novelty) is scored like the others and its cost reported as not timed (None),
    the run not stopped by it."""
    tmp, model, est, in_domain, ood, members = case
    key = "novelty+doptimality/element:max"
    rep = evaluate(model, est, in_domain, ood, fraction=0.5, seed=1, n_boot=0, n_splits=5,
                   timing=(1, 1), signals=DEFAULT_SIGNALS, alarm_stats=[key])
    row = {r["statistic"]: r["cost_per_step_s"] for r in rep["ranking"]}
    assert row[key] is None and row[DEFAULT_ALARM] > 0
    assert rep["detection"]["hot"][key]["value"] > 0.5


@pytest.mark.parametrize("keys,match", [
    (["gmm:max@tags=2"], "24 of 24 frames of set 'in_domain' hold no atom with tags=2"),
    (["nosuch:max"], "needs the signal 'nosuch'"),
    (["force_std:max"], "needs the signal 'force_std'"),      # no ensemble members given
    (["gmm+:max"], "alarm_stats"),
    (["gmm:q101"], "alarm_stats"),
    ("gmm:max", "the string"),
])
def test_statistics_asked_for_are_checked_before_any_model_pass(case, tmp_path, keys, match):
    from ltau_md.core.exceptions import LTAUError

    tmp, model, est, in_domain, ood, members = case
    with pytest.raises(LTAUError, match=match):
        evaluate(None, est, in_domain, ood, alarm_stats=keys, signals=("gmm",),
                 out=tmp_path / "never")
    assert not (tmp_path / "never").exists()


def test_slab_statistics_are_over_the_free_atoms_and_selections_over_their_tags(tmp_path):
    """O on Cu(111) with FixAtoms below the top layer: every frame statistic is taken over the
    free atoms (as the monitor and ``ltau-md fit`` take it), the calibrated estimator stores
    those values, and "@tags=2" statistics (the O atoms) are scored too; all against numpy on
    an independently fitted GMM."""
    from ltau_md.core.estimator import LTAUEstimator
    from ltau_md.testing import slab_md_frames

    model = EMTFeatureModel(elements=("O", "Cu"))
    train = [f for s in (1, 2) for f in slab_md_frames(s, 20, every=10)]
    x = np.concatenate([model.evaluate(a).features for a in train])
    z = np.concatenate([a.numbers for a in train])
    log = ErrorLog.create(tmp_path / "log", species=z,
                          frame_offsets=np.cumsum([0] + [len(a) for a in train]),
                          ref_force_norm=np.ones(len(x)))
    rng = np.random.default_rng(0)
    for _ in range(3):
        log.append(rng.gamma(2.0, 0.03, len(x)))
    est = LTAUEstimator(k=5, index="flat").fit(x, log)
    in_domain = _label([f for s in (3, 4, 5) for f in slab_md_frames(s, 10, every=10)],
                       model, 0.03, 1)
    hot = slab_md_frames(6, 10, every=10, temperature_K=1500.0)
    rep = evaluate(model, est, in_domain, {"hot": hot}, fraction=0.5, seed=0, n_boot=0,
                   n_splits=5, timing=None, signals=("gmm",),
                   alarm_stats=["gmm:max@tags=2", "gmm:q75@tags=1,2"], out=tmp_path / "rep")
    gmm = GMMDensity().fit(np.asarray(est.training_descriptors()), est.summary_.species)
    for name, frames in (("in_domain", in_domain), ("hot", hot)):
        scores = [gmm.score(model.evaluate(a).features, a.numbers) for a in frames]
        free = [a.get_tags() != 0 for a in frames]   # FixAtoms holds the tag-0 layers
        assert all(a.constraints[0].get_indices().tolist() == np.flatnonzero(~f).tolist()
                   for a, f in zip(frames, free, strict=True))
        got = rep["frame_values"][name]
        np.testing.assert_allclose(got["gmm:max"], [v[f].max() for v, f in
                                                    zip(scores, free, strict=True)], rtol=1e-9)
        np.testing.assert_allclose(got["gmm:max@tags=2"],
                                   [v[a.numbers == 8].max() for v, a in
                                    zip(scores, frames, strict=True)], rtol=1e-9)
        np.testing.assert_allclose(got["gmm:q75@tags=1,2"], [np.quantile(v[f], 0.75) for v, f
                                                             in zip(scores, free, strict=True)],
                                   rtol=1e-9)
    # the calibrated copy stores the calibration frames' free-atom values, as ltau-md fit would
    saved = LTAUEstimator.load(tmp_path / "rep" / "estimator").alarm_statistics_
    cal = ~split_frames(np.cumsum([0] + [len(a) for a in in_domain]), 0.5, seed=0)[1][
        np.cumsum([0] + [len(a) for a in in_domain])[:-1]]
    want = np.asarray(rep["frame_values"]["in_domain"]["gmm:max"])[cal]
    np.testing.assert_allclose(saved["gmm:max"]["values"], np.sort(want), rtol=1e-9)
    assert saved["gmm:max"]["atoms_per_frame"] == (in_domain[0].get_tags() != 0).sum()
    assert "gmm:max@tags=2" in saved
    with np.load(tmp_path / "rep" / "per_atom.npz") as npz:   # what an outside scorer needs
        tags = np.concatenate([a.get_tags() for a in hot])
        assert np.array_equal(npz["hot/tags"], tags)
        assert np.array_equal(npz["hot/free"], tags != 0)
    assert rep["detection"]["hot"]["gmm:max@tags=2"]["value"] > 0.5


def test_bootstrap_scores_equal_scoring_every_expanded_resample():
    """The count-weighted bootstrap of per-atom and detection scores gives, resample for
    resample, what ranking each expanded resample with scipy's rankdata gives (the draws
    are the same random stream)."""
    from scipy.stats import rankdata

    from ltau_md.workflows.evaluation._scores import detection_scores, per_atom_scores

    def spearman(x, y):
        return np.corrcoef(rankdata(x), rankdata(y))[0, 1]

    def auroc(s, lab):
        r = rankdata(s)
        n_pos, n_neg = lab.sum(), (~lab).sum()
        return (r[lab].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)

    rng = np.random.default_rng(3)
    sizes = rng.integers(3, 9, 25)
    off = np.r_[0, np.cumsum(sizes)]
    n = off[-1]
    err = rng.gamma(2.0, 0.1, n)
    sig = {"a": err * rng.lognormal(0, 0.5, n), "tied": np.round(err * 10 + rng.normal(0, 1, n))}
    numbers = rng.choice([1, 8], n)
    thr = np.quantile(err, 0.8)
    got = per_atom_scores(sig, err, numbers, off, 50, np.random.default_rng(7), thr)
    draw = np.random.default_rng(7)
    want = {k: {"sp": [], "au": []} for k in sig}
    for _ in range(50):
        frames = draw.integers(0, off.size - 1, off.size - 1)
        atoms = np.concatenate([np.arange(off[f], off[f + 1]) for f in frames])
        for k, v in sig.items():
            want[k]["sp"].append(spearman(v[atoms], err[atoms]))
            want[k]["au"].append(auroc(v[atoms], err[atoms] > thr))
    for k in sig:
        assert got[k]["spearman"]["ci95"] == pytest.approx(
            np.percentile(want[k]["sp"], [2.5, 97.5]), abs=1e-12)
        assert got[k]["high_error_auroc"]["ci95"] == pytest.approx(
            np.percentile(want[k]["au"], [2.5, 97.5]), abs=1e-12)
    pos = np.r_[rng.normal(1, 1, 30), np.inf]
    neg = np.round(rng.normal(0, 1, 40), 1)
    got = detection_scores(neg, pos, 60, np.random.default_rng(9))
    draw = np.random.default_rng(9)
    boot = []
    for _ in range(60):
        p, q = pos[draw.integers(0, pos.size, pos.size)], neg[draw.integers(0, neg.size, neg.size)]
        s = np.nan_to_num(np.r_[p, q], posinf=np.finfo(float).max)
        boot.append(auroc(s, np.r_[np.ones(p.size, bool), np.zeros(q.size, bool)]))
    assert got["ci95"] == pytest.approx(np.percentile(boot, [2.5, 97.5]), abs=1e-12)


def test_weighted_ranks_propagate_nan_like_rankdata():
    from ltau_md.core.metrics import rank_rows, weighted_ranks

    v = np.array([0.3, np.nan, 0.1, 0.3])
    w = np.array([[1, 0, 2, 1], [1, 1, 0, 0]])
    r = weighted_ranks(v, w)
    assert np.all(np.isnan(r[1]))
    expanded = rank_rows(np.array([[0.3, 0.1, 0.1, 0.3]]))[0]
    np.testing.assert_allclose(r[0][[0, 2, 3]], expanded[[0, 1, 3]])


def test_alarm_bootstraps_equal_one_resample_at_a_time():
    """Row-wise thresholds equal alarm_threshold of each row; the split rates and the
    out-of-domain rate intervals equal the one-resample-at-a-time loops they replace."""
    import warnings

    from ltau_md.core.metrics import alarm_threshold, alarm_thresholds_rows
    from ltau_md.workflows.evaluation._evaluate import _alarm_at, _alarms_of
    from ltau_md.workflows.evaluation._scores import ci95, split_thresholds

    rng = np.random.default_rng(4)
    rows = np.round(rng.gamma(2.0, 1.0, (30, 150)), 1)  # ties
    for rate in (0.01, 0.05, 0.2):
        np.testing.assert_array_equal(alarm_thresholds_rows(rows, rate),
                                      [alarm_threshold(r, rate) for r in rows])
    assert np.all(np.isinf(alarm_thresholds_rows(rows[:, :50], 0.01)))
    stat = np.round(rng.gamma(2.0, 1.0, 300), 2)
    draw = np.random.default_rng(12)
    want = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        for _ in range(40):
            perm = draw.permutation(300)
            want.append(np.mean(stat[perm[150:]] > alarm_threshold(stat[perm[:150]], 0.05)))
    split_thr, split_rates = split_thresholds(stat, 0.5, 0.05, 40, 12)
    np.testing.assert_array_equal(split_rates, want)
    # the out-of-domain rates averaged over the same splits, each at its split's threshold
    draw = np.random.default_rng(12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        thr = [alarm_threshold(stat[draw.permutation(300)[:150]], 0.05) for _ in range(40)]
    np.testing.assert_array_equal(split_thr, thr)
    far = {"a": stat + 1.0, "b": stat[:50] * 2.0}
    entry = _alarms_of(stat, {"values": np.sort(stat[:150]), "n_frames": 150},
                       np.ones(300, bool), far, 0.05, 0.5, 40, 12, 0,
                       lambda rate: np.random.default_rng(0))
    for name, v in far.items():
        assert entry["ood_rate_splits"][name] == pytest.approx(
            np.mean([np.mean(v > t) for t in thr]), abs=1e-12)
    assert entry["in_domain_rate_splits"]["mean"] == pytest.approx(np.mean(want), abs=1e-12)
    cal = {"values": np.sort(stat[:200]), "n_frames": 200}
    ood = {"a": stat[200:] + 1.0, "b": stat[:50] * 2.0}
    got = _alarm_at(cal, 0.05, stat[200:], ood, 60, np.random.default_rng(5))
    draw = np.random.default_rng(5)
    boot = {n: [] for n in ood}
    for _ in range(60):
        t = alarm_threshold(cal["values"][draw.integers(0, 200, 200)], 0.05)
        for n, v in ood.items():
            boot[n].append(np.mean(v[draw.integers(0, v.size, v.size)] > t))
    assert got["ood_rate_ci95"] == {n: ci95(b) for n, b in boot.items()}


class SpreadEMT(EMTFeatureModel):
    """EMT that also reports a constant Gaussian force spread of its own ("mve", eV/A)."""

    def __init__(self, spread, **kw):
        super().__init__(**kw)
        self.spread = spread

    def evaluate(self, atoms, stress=False):
        out = super().evaluate(atoms, stress)
        out.signals = {"mve": np.full(len(atoms), self.spread)}
        return out


def test_evaluate_scores_a_models_own_spread_and_its_calibration(case):
    """The labels are EMT + N(0, 0.04^2) per component: a model predicting exactly that
    spread is calibrated, one predicting 4x that is not; the spread is scored as a signal."""
    tmp, _, est, in_domain, ood, _ = case
    areas = {}
    for factor in (1.0, 4.0):
        model = SpreadEMT(0.04 * np.sqrt(3) * factor, elements=CU)
        rep = evaluate(model, est, in_domain, ood, fraction=0.5, seed=3, n_boot=20,
                       n_splits=5, timing=None)
        cal = rep["spread_calibration"]["mve"]
        areas[factor] = cal["miscalibration_area"]
        assert rep["summary"]["spread_miscalibration_area"]["mve"] == areas[factor]
        assert "mve" in rep["signals"] and "mve:max" in rep["alarms"]
        from ltau_md.cli import evaluate as cmd

        assert (f"miscalibration area of the mve spread: {areas[factor]:.3f} as given"
                in cmd.summary_text(rep, "OUT"))
        # the factor fitted on the calibration half undoes the known one
        assert cal["scale"] == pytest.approx(1 / factor, rel=0.15)
        assert cal["miscalibration_area_fitted"] < 0.1  # one bin: the area moves fast with c
        if factor > 1:  # 4x too wide: the fitted factor also improves the likelihood
            assert cal["nll_per_component_fitted"] < cal["nll_per_component"] - 0.5
    assert areas[1.0] < 0.05 < 0.2 < areas[4.0]


def test_summary_text_shows_the_split_means_beside_the_one_split():
    """With the alarm on, the printed summary gives the one split's rates and, on the next
    line, their means over the random splits (hand-made summary)."""
    from ltau_md.cli import evaluate as cmd

    s = {"default_alarm": "a:max", "alarm_rate_nominal": 0.01, "alarm_off_reason": None,
         "alarm_rate_in_domain": 0.0, "alarm_rate_ood": {"x": 0.013, "y": 0.5},
         "alarm_rate_in_domain_mean_splits": 0.0094,
         "alarm_rate_ood_mean_splits": {"x": 0.25, "y": 0.6},
         "ood_auroc": {}, "spearman": {}, "miscalibration_area_fitted": 0.02, "s": 1.0,
         "miscalibration_area_s1": 0.03}
    lines = cmd.summary_text({"summary": s, "ranking": []}, "out").splitlines()
    i = lines.index("  in-domain (held-out) 0.0 %; out of domain: x 1.3 %, y 50.0 %")
    assert lines[i + 1] == ("  mean over random splits: in-domain 0.9 %; out of domain: "
                            "x 25.0 %, y 60.0 %")


def _brute_combined_split(sig, z, off, cal, ood, rate):
    """One split of a Fisher combination of per-element frame maxima, from its definition:
    every count of "values >= v" done by hand, a calibration atom against the calibration atoms
    of its element in the *other* calibration frames, a calibration frame's maximum against the
    other calibration frames' (beyond every value left in: the full reference's predictive
    tail); the threshold the conformal one of the calibration frames' combined values. Returns
    the evaluation frames' and each out-of-domain set's alarm rates."""
    from ltau_md.core.metrics import TailReference, alarm_threshold

    frame = np.repeat(np.arange(off.size - 1), np.diff(off))
    cal_atoms = cal[frame]

    def p_of(v, ref_values, full):  # conformal, then the full reference's tail beyond
        ge = int(np.sum(ref_values >= v))
        p = (ge + 1) / (ref_values.size + 1)
        return min(p, float(TailReference.of(full).tail.survival(np.array([v]))[0])) \
            if ge == 0 else p

    def frame_max(values, elements, own):
        """-log p of each atom against the calibration atoms of its element, frame ``own``'s
        left out (None: none); the largest."""
        out = []
        for v, e in zip(values, elements, strict=True):
            keep = cal_atoms & (z == e) & (frame != own if own is not None else True)
            out.append(-np.log(p_of(v, sig_e[e][keep[z == e]],
                                    np.sort(sig_e[e][cal_atoms[z == e]]))))
        return max(out)

    total_cal = np.zeros(int(cal.sum()))
    evl_scores = np.zeros(int((~cal).sum()))
    ood_scores = {n: np.zeros(o[2].size - 1) for n, o in ood.items()}
    for name, v in sig.items():
        sig_e = {e: v[z == e] for e in np.unique(z)}
        m = {f: frame_max(v[off[f]:off[f + 1]], z[off[f]:off[f + 1]], f if cal[f] else None)
             for f in range(off.size - 1)}
        cal_m = np.array([m[f] for f in np.flatnonzero(cal)])
        full = np.sort(cal_m)
        total_cal -= np.log([p_of(x, np.delete(cal_m, i), full) for i, x in enumerate(cal_m)])
        evl_scores -= np.log([p_of(m[f], cal_m, full) for f in np.flatnonzero(~cal)])
        for n, (s, zz, oo) in ood.items():
            mo = [frame_max(s[name][a:b], zz[a:b], None) for a, b in zip(oo[:-1], oo[1:],
                                                                        strict=True)]
            ood_scores[n] -= np.log([p_of(x, cal_m, full) for x in mo])
    thr = alarm_threshold(total_cal, rate)
    return np.mean(evl_scores > thr), {n: np.mean(s > thr) for n, s in ood_scores.items()}


def test_combined_split_rates_refit_the_references_on_each_split():
    """The split means of a combined statistic refit its references on each split's
    calibration frames: equal, split by split, to the definition computed by hand
    (:func:`_brute_combined_split`) over the splits ``split_thresholds`` draws (two elements,
    frames of varying size; one set shifted, one much further out)."""
    from ltau_md.workflows.evaluation._scores import combined_split_rates

    rng = np.random.default_rng(7)
    sizes = rng.integers(3, 7, 48)
    off = np.concatenate([[0], np.cumsum(sizes)])
    z = rng.choice([1, 8], off[-1])
    sig = {"a": rng.gamma(2.0, 1.0, off[-1]), "b": rng.gamma(3.0, 0.5, off[-1])}
    ood = {}
    for name, shift, n in (("near", 0.8, 10), ("far", 6.0, 7)):
        oo = np.concatenate([[0], np.cumsum(rng.integers(3, 7, n))])
        ood[name] = ({k: rng.gamma(2.0, 1.0, oo[-1]) + shift for k in sig},
                     rng.choice([1, 8], oo[-1]), oo)
    key = "a/element+b/element:max"
    fraction, rate, n_splits, seed = 0.5, 0.1, 4, 3
    rates, ood_rates = combined_split_rates(
        key, sig, off, z, None, {n: (s, oo, zz, None) for n, (s, zz, oo) in ood.items()},
        fraction, rate, n_splits, seed)
    draw = np.random.default_rng(seed)
    for j in range(n_splits):
        perm = draw.permutation(off.size - 1)
        cal = np.zeros(off.size - 1, bool)
        cal[perm[:24]] = True
        want_in, want_ood = _brute_combined_split(sig, z, off, cal, ood, rate)
        assert rates[j] == pytest.approx(want_in, abs=1e-12)
        for name in ood:
            assert ood_rates[name][j] == pytest.approx(want_ood[name], abs=1e-12)
    assert np.all(ood_rates["far"] == 1.0) and np.any(ood_rates["near"] < 1.0)


def test_the_default_alarms_split_means_refit_its_references(case):
    """``evaluate`` averages the default (combined) alarm's rates over random splits with its
    references refitted on each split: its reported means equal ``combined_split_rates`` of
    per-atom signals fitted and computed independently here, over the splits of the seed the
    plain statistics' split means use (their values the same splits of ``split_thresholds``)."""
    from ltau_md.workflows.evaluation._scores import combined_split_rates, split_thresholds

    tmp, model, est, in_domain, ood, members = case
    rep = evaluate(model, est, in_domain, ood, fraction=0.5, seed=4, n_boot=0, n_splits=6,
                   timing=None, signals=DEFAULT_SIGNALS, alarm_rate=0.1)
    train_x = np.asarray(est.training_descriptors())
    fitted = {n: SIGNAL_CLASSES[n]().fit(train_x, est.summary_.species) for n in DEFAULT_SIGNALS}

    def parts(frames):
        return ({n: np.concatenate([f.score(model.evaluate(a).features, a.numbers)
                                    for a in frames]) for n, f in fitted.items()},
                np.concatenate([[0], np.cumsum([len(a) for a in frames])]),
                np.concatenate([a.numbers for a in frames]), None)

    sig, off, z, _ = parts(in_domain)
    rates, ood_rates = combined_split_rates(DEFAULT_ALARM, sig, off, z, None,
                                            {n: parts(f) for n, f in ood.items()}, 0.5, 0.1, 6,
                                            5)
    entry = rep["alarms"][DEFAULT_ALARM]
    assert entry["off"] is False
    assert entry["in_domain_rate_splits"]["mean"] == pytest.approx(rates.mean(), abs=1e-12)
    assert entry["in_domain_rate_splits"]["worst"] == pytest.approx(rates.max(), abs=1e-12)
    for name in ood:
        assert entry["ood_rate_splits"][name] == pytest.approx(ood_rates[name].mean(),
                                                               abs=1e-12)
    assert entry["ood_rate_splits"]["bcc"] > 0.5  # another lattice stands out
    # a plain statistic's split means: its values over the same splits
    plain = "gmm:max" if "gmm:max" in rep["alarms"] else "novelty:max"
    v = np.asarray(rep["frame_values"]["in_domain"][plain])
    _, want = split_thresholds(v, 0.5, 0.1, 6, 5)
    assert rep["alarms"][plain]["in_domain_rate_splits"]["mean"] == pytest.approx(want.mean())
