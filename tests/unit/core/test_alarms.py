"""In-domain alarms end to end with a real FeatureModel (EMT + radial descriptors), a real FAISS
estimator and real ASE MD: thresholds fitted from held-out in-domain MD frames, a planted
out-of-domain structure fires Threshold(alarm_rate=...) at the step computed here with numpy,
in-domain MD does not; tags selection; thresholds survive save/load and a new fit of s."""

from __future__ import annotations

import json
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
from ase import units
from ase.calculators.emt import EMT
from ase.md.langevin import Langevin

from ltau_md.core.calculator import PER_ATOM_KEYS, LTAUCalculator
from ltau_md.core.calibration import (
    DEFAULT_ALARM,
    DEFAULT_ALARM_STATS,
    DEFAULT_SIGNALS,
    alarm_statistics_from_structures,
    alarm_statistics_from_training,
    fit_alarm_thresholds,
    fit_scale,
)
from ltau_md.core.errorlog import ErrorLog
from ltau_md.core.estimator import InDomainStatistics, LTAUEstimator
from ltau_md.core.exceptions import InvalidParameterError, LTAUError
from ltau_md.core.metrics import alarm_threshold, combined_statistics, fit_combined
from ltau_md.core.observers import Threshold, UQMonitor
from ltau_md.testing import EMTFeatureModel, adsorbate_slab, slab_md_frames

slab = adsorbate_slab      # O on Cu(111), OC20 tags, FixAtoms below the top layer
md_frames = slab_md_frames


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("alarm")
    model = EMTFeatureModel(elements=("O", "Cu"))
    train = md_frames(1, 60) + md_frames(2, 60)
    x = np.concatenate([model.evaluate(a).features for a in train])
    offs = np.cumsum([0] + [len(a) for a in train])
    n = len(x)
    rng = np.random.default_rng(0)
    log = ErrorLog.create(tmp / "log", species=np.concatenate([a.numbers for a in train]),
                          frame_offsets=offs, ref_force_norm=np.ones(n))
    for e in range(6):
        log.append(0.05 * rng.lognormal(0, 0.5, n) * (1 + np.exp(-e)))
    est = LTAUEstimator(k=5).fit(x, log)
    held_out = md_frames(3, 100) + md_frames(4, 100) + md_frames(5, 100)
    return SimpleNamespace(model=model, est=est, train=train, offs=offs, held_out=held_out,
                           tmp=tmp, log=log)


def frame_novelty(setup, atoms, mask=None):
    """max novelty over ``mask`` (default: the free atoms), straight from estimator.predict."""
    f = setup.model.evaluate(atoms).features
    nov = setup.est.predict(f, species=atoms.numbers).novelty
    return float(np.max(nov[atoms.get_tags() != 0 if mask is None else mask]))


def conformal(values, rate):
    v = np.sort(values)
    return v[int(np.ceil((len(v) + 1) * (1 - rate))) - 1]


@pytest.fixture(scope="module")
def fitted(setup):
    est = setup.est
    est.calibration_ = None
    entries = alarm_statistics_from_structures(setup.model, est, setup.held_out)
    return entries


def test_held_out_statistics_equal_numpy_and_leave_the_scale_uncalibrated(setup, fitted):
    est = setup.est
    assert est.calibration_ is None and est.scale_ == 1.0
    assert est.alarm_statistics_ == fitted
    assert set(fitted) == {"novelty:max", "novelty:mean", "uncertainty:max",
                           "uncertainty:mean", "novelty:max@tags=2", "novelty:mean@tags=2",
                           "uncertainty:max@tags=2", "uncertainty:mean@tags=2"}
    ref = sorted(frame_novelty(setup, a) for a in setup.held_out)
    np.testing.assert_allclose(fitted["novelty:max"]["values"], ref, rtol=1e-6)
    ads = sorted(frame_novelty(setup, a, a.get_tags() == 2) for a in setup.held_out)
    np.testing.assert_allclose(fitted["novelty:max@tags=2"]["values"], ads, rtol=1e-6)
    assert fitted["novelty:max"]["n_frames"] == 300
    assert fitted["novelty:max"]["source"] == "held-out"


def test_planted_out_of_domain_structure_fires_at_the_step_numpy_predicts(setup, fitted,
                                                                         tmp_path):
    frames = md_frames(6, 30)
    for i in (15, 16, 17):                    # O pushed into the surface: out of domain
        o = frames[i].get_tags() == 2
        frames[i].positions[o, 2] -= 1.0
    thr = conformal(fitted["novelty:max"]["values"], 0.01)
    stat = np.array([frame_novelty(setup, a) for a in frames])
    above = stat > thr
    fire = next(i for i in range(1, 30) if above[i] and above[i - 1])  # patience 2
    assert fire == 16 and not above[:15].any()

    atoms = frames[0].copy()
    atoms.calc = LTAUCalculator(setup.model, setup.est, warm_start=False)
    dyn = SimpleNamespace(atoms=atoms, nsteps=0, max_steps=10**9)
    pol = Threshold("stop", alarm_rate=0.01, signal="novelty", patience=2)
    mon = UQMonitor(dyn, [pol], out_dir=tmp_path)
    assert pol.threshold == pytest.approx(thr)
    for i, f in enumerate(frames):
        if i > dyn.max_steps:
            break
        dyn.nsteps = i
        atoms.positions = f.positions
        atoms.get_forces()                    # as an optimizer or MD step leaves it
        mon()
    mon.close()
    assert mon.stopped is not None and mon.stopped.step == 16
    assert mon.stopped.threshold == pytest.approx(thr)
    assert mon.stopped.value == pytest.approx(stat[16], rel=1e-6)
    assert "max novelty" in mon.stopped.reason and "alarm rate 0.01" in mon.stopped.reason
    rows = [json.loads(x) for x in (tmp_path / "steps.jsonl").read_text().splitlines()]
    np.testing.assert_allclose([r["novelty:max"] for r in rows], stat[:17], rtol=1e-6)
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["policies"][0]["threshold"] == pytest.approx(thr)
    assert s["policies"][0]["resolved_from"] == {"key": "novelty:max", "alarm_rate": 0.01,
                                                 "n_frames": 300, "source": "held-out"}
    sig = s["signals"]["novelty:max"]
    assert sig["max"] == pytest.approx(stat[:17].max(), rel=1e-6)
    assert sig["max_step"] == int(np.argmax(stat[:17]))
    assert sig["initial"] == pytest.approx(stat[0], rel=1e-6)
    from ase.io import read

    traj = read(tmp_path / "trajectory.extxyz", index=":")
    assert all(k in traj[-1].arrays for k in PER_ATOM_KEYS)


def test_in_domain_md_raises_no_alarm(setup, fitted, tmp_path):
    from ltau_md.workflows.simulate import run_md

    pols = [Threshold("stop", alarm_rate=0.01, signal="novelty", patience=2),
            Threshold("warn", alarm_rate=0.05, signal="novelty", on="max", select="tags=2")]
    s = run_md(slab(), LTAUCalculator(setup.model, setup.est), tmp_path / "md",
               temperature_K=300.0, timestep_fs=2.0, steps=80, friction=0.02, policies=pols,
               seed=11, progress=False)
    assert s["status"] == "completed" and s["stopped"] is None
    # independently: every observed frame is below the 1 % threshold or alone above it
    from ase.io import read

    thr = conformal(fitted["novelty:max"]["values"], 0.01)
    stat = np.array([frame_novelty(setup, a) for a in
                     read(tmp_path / "md" / "trajectory.extxyz", index=":")])
    assert len(stat) == 81
    assert not np.any((stat[1:] > thr) & (stat[:-1] > thr))
    assert s["signals"]["novelty:max@tags=2"]["max"] is not None


def test_tags_selection_follows_the_atoms(tmp_path):
    """A scripted novelty: the slab atoms are very novel, the adsorbate only from step 3 on;
    a policy on tags=2 fires at step 3, one on all atoms at step 0."""
    from ase.calculators.calculator import Calculator, all_changes

    class Scripted(Calculator):
        implemented_properties = ["energy", "forces", "uncertainty", "novelty"]

        def __init__(self):
            super().__init__()
            self.n = 0
            self.estimator = SimpleNamespace(calibration_=None, alarm_statistics_=(
                InDomainStatistics(
                    {"novelty:max@tags=2": {"values": [0.5, 1.0, 1.5], "n_frames": 3,
                                            "source": "test"}})))

        def calculate(self, atoms=None, properties=None, system_changes=all_changes):
            super().calculate(atoms, properties, system_changes)
            nov = np.where(atoms.get_tags() == 2, 1.0 + (self.n >= 3) * 5.0, 9.0)
            self.n += 1
            self.results = {"energy": 0.0, "forces": np.zeros((len(atoms), 3)),
                            "uncertainty": np.zeros(len(atoms)), "novelty": nov}

    a = slab()
    a.calc = Scripted()
    dyn = SimpleNamespace(atoms=a, nsteps=0, max_steps=10**9)
    ads = Threshold("warn", alarm_rate=0.3, signal="novelty", select="tags=2")
    every = Threshold("warn", above=3.0, signal="novelty")
    mon = UQMonitor(dyn, [ads, every], watch=["novelty:mean@tags=2", "uncertainty:q90"])
    assert ads.threshold == 1.5              # n = 3: k = ceil(4 * 0.7) = 3
    for i in range(6):
        dyn.nsteps = i
        a.positions[0, 0] += 0.01
        a.get_forces()
        mon()
    steps = {(e.action, e.reason.split()[1], e.step) for e in mon.events}
    assert ("warn", "novelty", 0) in steps
    ads_events = [e.step for e in mon.events if "tags=2" in e.reason]
    assert ads_events == [3]
    sig = mon.summary()["signals"]
    assert set(sig) == {"novelty:max@tags=2", "novelty:max", "novelty:mean@tags=2",
                        "uncertainty:q90"}
    assert sig["novelty:mean@tags=2"] == {"initial": 1.0, "max": 6.0, "max_step": 3,
                                          "mean": 3.5, "final": 6.0}
    assert sig["novelty:max"]["initial"] == 9.0    # the free atoms: slab top layer and O
    assert [r["novelty:max@tags=2"] for r in mon.records] == [1.0] * 3 + [6.0] * 3
    with pytest.raises(LTAUError, match="fit them with `ltau-md calibrate`"):
        UQMonitor(dyn, [Threshold("warn", alarm_rate=0.3, signal="novelty")])


@pytest.mark.parametrize("kw,match", [
    ({}, "exactly one"), ({"above": 0.5, "alarm_rate": 0.01}, "exactly one"),
    ({"above": 1.5}, r"\[0, 1\]"), ({"above": -0.1}, r"\[0, 1\]"),
    ({"alarm_rate": 0.0}, r"\(0, 1\)"), ({"alarm_rate": 1.0}, r"\(0, 1\)"),
    ({"above": 0.5, "patience": 0}, "patience"), ({"above": 0.5, "on": "median"}, "on must"),
    ({"above": 0.5, "select": "species=8"}, "select must"),
    ({"alarm_rate": 0.1, "select": np.ones(3, bool)}, "mask"),
    ({"above": 0.5, "hysteresis": -1.0}, "hysteresis"),
])
def test_threshold_parameters_are_checked(kw, match):
    with pytest.raises(InvalidParameterError, match=match):
        Threshold("stop", **kw)
    Threshold("stop", above=4.0, signal="novelty")   # novelty is not bounded by 1


def test_thresholds_round_trip_through_save_load_and_survive_a_new_s(setup, fitted, tmp_path):
    est = setup.est
    est.save(tmp_path / "est")
    back = LTAUEstimator.load(tmp_path / "est")
    assert back.alarm_statistics_ == est.alarm_statistics_
    assert back.calibration_ is None
    # a new fit of s keeps the novelty statistics and drops the s-dependent uncertainty ones
    x = np.concatenate([setup.model.evaluate(a).features for a in setup.held_out[:40]])
    err = 0.08 * np.random.default_rng(3).lognormal(0, 0.6, len(x))
    with pytest.warns(UserWarning, match="depend on s"):
        fit_scale(back, x, err)
    kept = back.alarm_statistics_
    assert back.calibration_.area is not None
    assert {k for k in kept if k.startswith("novelty")} == \
        {k for k in fitted if k.startswith("novelty")}
    assert not any(k.startswith("uncertainty") for k in kept)
    assert kept["novelty:max"] == fitted["novelty:max"]


@pytest.fixture(scope="module")
def combined(setup):
    """An estimator with the default alarm's signals, the GMM and D-optimality, its statistics
    of 150 held-out frames (a 5 % rate needs 19), those frames and their features."""
    signals = tuple(dict.fromkeys(("gmm", "doptimality", *DEFAULT_SIGNALS)))
    est = LTAUEstimator(k=5, signals=signals).fit(
        np.concatenate([setup.model.evaluate(a).features for a in setup.train]), setup.log)
    held_out = setup.held_out[::2]
    got = alarm_statistics_from_structures(setup.model, est, held_out)
    return est, got, held_out, [setup.model.evaluate(a).features for a in held_out]


def test_every_fitted_latent_signal_gets_its_in_domain_maximum(setup, combined):
    """An estimator fitted with GMM and D-optimality: the default held-out and training
    statistics hold "doptimality:max" (not only the listed "gmm:max"), equal to the frame
    maxima over the free atoms computed here, so Threshold(signal="doptimality",
    alarm_rate=...) resolves to their conformal quantile."""
    est, got, held_out, feats = combined
    assert {"doptimality:max", "doptimality:max@tags=2", "gmm:max"} <= set(got)
    assert "doptimality:mean" not in got
    ref = []
    for a, f in zip(held_out, feats, strict=True):
        v = est.signal_values(f, a.numbers)["doptimality"]
        ref.append(v[a.get_tags() != 0].max())
    np.testing.assert_allclose(got["doptimality:max"]["values"], sorted(ref), rtol=1e-6)
    calc = LTAUCalculator(setup.model, est)
    t = Threshold("stop", signal="doptimality", alarm_rate=0.05)
    assert t.resolve(calc) == pytest.approx(conformal(ref, 0.05), rel=1e-6)
    train = alarm_statistics_from_training(est, setup.log.frame_offsets, frames=setup.train,
                                           store=False)
    assert {"doptimality:max", "doptimality:max@tags=2", "gmm:max@tags=2"} <= set(train)
    assert train["doptimality:max"]["source"] == "training"
    # a combination of novelty (leave-one-out) with a latent signal (in-sample) is refused,
    # with the reason, not an IndexError
    with pytest.raises(LTAUError, match="combines novelty with latent signals"):
        alarm_statistics_from_training(est, setup.log.frame_offsets, frames=setup.train,
                                       store=False,
                                       stats=(*DEFAULT_ALARM_STATS, "novelty+gmm/element:max"))


def test_training_leave_one_out_fallback_equals_numpy(setup):
    est = setup.est
    tags = np.concatenate([a.get_tags() for a in setup.train])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = alarm_statistics_from_training(est, setup.log.frame_offsets, tags=tags,
                                             store=False)
    assert set(got) == {"novelty:max", "novelty:mean", "novelty:max@tags=2",
                        "novelty:mean@tags=2"}
    off = setup.offs
    nov = est.train_novelty_
    ref = sorted(nov[a:b].max() for a, b in zip(off[:-1], off[1:], strict=True))
    np.testing.assert_allclose(got["novelty:max"]["values"], ref, rtol=1e-6)
    ref2 = sorted(nov[a:b][tags[a:b] == 2].mean() for a, b in zip(off[:-1], off[1:], strict=True))
    np.testing.assert_allclose(got["novelty:mean@tags=2"]["values"], ref2, rtol=1e-6)
    assert got["novelty:max"]["source"] == "training-loo"
    # with the training frames: their tags, and FixAtoms as in the monitor (free atoms only)
    got = alarm_statistics_from_training(est, setup.log.frame_offsets, frames=setup.train,
                                         store=False)
    free = tags != 0
    ref = sorted(nov[a:b][free[a:b]].max() for a, b in zip(off[:-1], off[1:], strict=True))
    np.testing.assert_allclose(got["novelty:max"]["values"], ref, rtol=1e-6)
    assert "novelty:mean@tags=2" in got
    # the defaults plus a statistic asked for; one the training atoms cannot give is refused
    more = alarm_statistics_from_training(est, setup.log.frame_offsets, frames=setup.train,
                                          stats=(*DEFAULT_ALARM_STATS, "novelty:q90"),
                                          store=False)
    assert set(more) == set(got) | {"novelty:q90"}
    assert more["novelty:q90"]["source"] == "training-loo"
    with pytest.raises(LTAUError, match="needs per_atom"):
        alarm_statistics_from_training(est, setup.log.frame_offsets, store=False,
                                       stats=(*DEFAULT_ALARM_STATS, "uncertainty:max"))
    with pytest.raises(LTAUError, match="needs per_atom"):
        fit_alarm_thresholds(est, {"novelty": nov}, off, stats=("uncertainty:max",))


def test_calibrate_structures_fits_alarm_statistics_at_the_new_s(setup, tmp_path):
    """A model whose forces carry noise, labelled EMT structures: calibrate_structures fits s
    and stores the statistics of the same structures, uncertainty at the fitted s."""
    from ase.calculators.singlepoint import SinglePointCalculator

    from ltau_md.core.calibration import calibrate_structures

    class Noisy(EMTFeatureModel):
        def evaluate(self, atoms, stress=False):
            out = super().evaluate(atoms, stress)
            rng = np.random.default_rng(int(1e6 * abs(atoms.positions[0, 0])) % 2**32)
            out.forces = out.forces + rng.normal(0, 0.05, out.forces.shape)
            return out

    frames = []
    for a in setup.held_out[:60]:
        b = a.copy()
        c = a.copy()
        c.calc = EMT()
        b.calc = SinglePointCalculator(b, energy=c.get_potential_energy(),
                                       forces=c.get_forces())
        frames.append(b)
    setup.est.save(tmp_path / "est")                  # a copy: the fixture's stays as it is
    est = LTAUEstimator.load(tmp_path / "est")
    model = Noisy(elements=("O", "Cu"))
    fit, arrays = calibrate_structures(model, est, frames, n_grid=15, n_refine=4)
    th = est.alarm_statistics_
    assert est.calibration_.s == fit.s
    assert {v["source"] for v in th.values()} == {"calibration"}
    unc_max = []
    for a in frames:
        p = est.predict(model.evaluate(a).features, species=a.numbers)   # at the fitted s
        unc_max.append(p.uncertainty[a.get_tags() != 0].max())
    np.testing.assert_allclose(th["uncertainty:max"]["values"], sorted(unc_max), atol=1e-9)
    assert th["novelty:max@tags=2"]["n_frames"] == 60


def _run_and_compare(dyn, mon, check, seen, *, steps, n_seen):
    """Run ``dyn`` for ``steps`` steps with the monitor, then ``check``, attached (``check``
    reads the monitor's record of the step and appends (monitor value, independent value)
    pairs to ``seen``); ``n_seen`` pairs, every one equal."""
    dyn.attach(mon, interval=1)
    dyn.attach(check, interval=1)
    dyn.run(steps)
    assert len(seen) == n_seen
    np.testing.assert_allclose(*np.array(seen).T, rtol=1e-9)


def test_default_alarm_is_fitted_stored_and_watched_along_md(setup, combined, tmp_path):
    """The default (combined) alarm from held-out structures: its values the leave-one-out
    combined values of the frames' free atoms; saved and loaded; resolved by Threshold; the
    monitor's value at each MD step equal to combined_statistics of that step's signals."""
    model = setup.model
    est, entries, held_out, feats = combined
    assert DEFAULT_ALARM in entries and f"{DEFAULT_ALARM}@tags=2" in entries
    entry = est.alarm_statistics_[DEFAULT_ALARM]
    # its values: the leave-one-out combined values of the held-out frames' free atoms
    signal, on = DEFAULT_ALARM.split(":")
    per_atom, nums, free = {}, [], []
    for a, f in zip(held_out, feats, strict=True):
        v = est.signal_values(f, a.numbers)
        for k in DEFAULT_SIGNALS:
            per_atom.setdefault(k, []).append(v[k])
        nums.append(a.numbers)
        free.append(a.get_tags() != 0)
    per_atom = {k: np.concatenate(v) for k, v in per_atom.items()}
    off = np.cumsum([0] + [len(a) for a in held_out])
    ref, loo = fit_combined(signal, on, per_atom, off, np.concatenate(nums),
                            np.concatenate(free))
    np.testing.assert_allclose(entry["values"], np.sort(loo), rtol=1e-6)
    # survives save/load; drop() of a component signal removes it
    path = est.save(tmp_path / "est")
    back = LTAUEstimator.load(path)
    assert back.alarm_statistics_[DEFAULT_ALARM]["reference"] == entry["reference"]
    copy = InDomainStatistics(est.alarm_statistics_.to_dict())
    assert DEFAULT_ALARM in copy.drop(["clustered_doptimality"])
    a = held_out[0].copy()
    a.calc = LTAUCalculator(model, back)
    thr = Threshold("warn", signal=signal, alarm_rate=0.05)
    # the same statistic over the adsorbate atoms only, against its own references
    ads = Threshold("warn", signal=signal, alarm_rate=0.05, select="tags=2")
    ads_entry = est.alarm_statistics_[f"{DEFAULT_ALARM}@tags=2"]
    dyn = Langevin(a, 2 * units.fs, temperature_K=300, friction=0.02 / units.fs,
                   fixcm=False, rng=np.random.default_rng(0), logfile=None)
    mon = UQMonitor(dyn, [thr, ads])
    seen = []

    def check():
        res = a.calc.results
        per = {k: res[k] for k in DEFAULT_SIGNALS}
        for key, e, sel in ((DEFAULT_ALARM, entry, a.get_tags() != 0),
                            (f"{DEFAULT_ALARM}@tags=2", ads_entry, a.get_tags() == 2)):
            want = combined_statistics(signal, on, per, np.array([0, len(a)]), e["reference"],
                                       a.numbers, sel,
                                       size_ratio=sel.sum() / e["atoms_per_frame"])[0]
            seen.append((mon.records[-1][key], want))
    _run_and_compare(dyn, mon, check, seen, steps=5, n_seen=12)
    assert thr.threshold == pytest.approx(alarm_threshold(entry["values"], 0.05))
    assert ads.threshold == pytest.approx(alarm_threshold(ads_entry["values"], 0.05))


def test_a_per_element_mean_warns_beside_the_default_stop(setup, combined, tmp_path):
    """The two-alarm recipe of the docs (Concepts: local events and whole-structure drift): a
    per-element frame mean fitted from held-out structures besides the defaults is resolved by
    ``Threshold(signal="doptimality/element", on="mean")`` next to the default stop; at every
    MD step its value is the mean over the free atoms of each atom's -log tail p-value against
    the held-out atoms of its element, then read against the held-out frames' means (computed
    here with element_normalised and tail_pvalue)."""
    from ltau_md.core.metrics import element_normalised, tail_pvalue

    est, _, held_out, feats = combined
    est = LTAUEstimator.load(est.save(tmp_path / "est"))  # a copy: the fixture is shared
    key = "doptimality/element:mean"
    got = alarm_statistics_from_structures(setup.model, est, held_out, stats=(key,))
    entry = got[key]
    # the held-out atoms' per-element references and frame means, by hand
    vals = [est.signal_values(f, a.numbers)["doptimality"] for a, f in
            zip(held_out, feats, strict=True)]
    free = [a.get_tags() != 0 for a in held_out]
    nums = np.concatenate([a.numbers[m] for a, m in zip(held_out, free, strict=True)])
    pool = np.concatenate([v[m] for v, m in zip(vals, free, strict=True)])
    refs = {int(z): np.sort(pool[nums == z]) for z in np.unique(nums)}
    frame_ref = entry["reference"]["frames"]["doptimality/element"]
    a = held_out[1].copy()
    a.calc = LTAUCalculator(setup.model, est)
    stop = Threshold("stop", signal=DEFAULT_ALARM.partition(":")[0], alarm_rate=0.05)
    warn = Threshold("warn", signal="doptimality/element", on="mean", alarm_rate=0.05)
    dyn = Langevin(a, 2 * units.fs, temperature_K=300, friction=0.02 / units.fs,
                   fixcm=False, rng=np.random.default_rng(1), logfile=None)
    mon = UQMonitor(dyn, [stop, warn])
    seen = []

    def check():
        m = a.get_tags() != 0
        mean = element_normalised(a.calc.results["doptimality"][m], a.numbers[m], refs).mean()
        seen.append((mon.records[-1][key], -np.log(tail_pvalue(np.array([mean]),
                                                                frame_ref))[0]))
    _run_and_compare(dyn, mon, check, seen, steps=4, n_seen=5)
    assert warn.threshold == pytest.approx(alarm_threshold(entry["values"], 0.05))
    assert stop.threshold == pytest.approx(
        alarm_threshold(est.alarm_statistics_[DEFAULT_ALARM]["values"], 0.05))
