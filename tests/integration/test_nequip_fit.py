"""End to end: nequip-train with the callback -> error logs -> fit -> predict."""

from __future__ import annotations

import json
import shutil

import ase.io
import numpy as np
import pytest

from ltau_md.core.calibration import DEFAULT_ALARM, DEFAULT_SIGNALS
from ltau_md.core.errorlog import VALIDATION_FILE, ErrorLog
from ltau_md.core.estimator import LTAUEstimator
from ltau_md.core.exceptions import ArtifactError
from ltau_md.core.metrics import fit_combined
from ltau_md.integrations.nequip import NequIPFeatureModel, descriptors_for_dataset, find_error_log
from ltau_md.integrations.nequip.fit import fit_from_runs


def _brute_force_prediction(train_desc, query_desc, logs, atol, k):
    """kNN by full distance matrix, p per member from the raw logs (window = all epochs)."""
    p = []
    for lg in logs:
        for m in lg.members:
            eps = np.stack([lg.read_epoch(e, m) for e in lg.epochs(m)])  # (T, N)
            p.append((eps <= atol).mean(axis=0))
    p = np.stack(p)  # (M, N)
    d2 = ((query_desc[:, None, :].astype(np.float64) - train_desc[None].astype(np.float64))
          ** 2).sum(-1)
    nn = np.argsort(d2, axis=1, kind="stable")[:, :k]
    mu, sig = p.mean(0), p.std(0)
    return mu[nn].mean(1), sig[nn].mean(1), nn


def test_logs_have_epochs_times_atoms(tiny_run):
    frames = ase.io.read(tiny_run.train_xyz, ":")
    n = sum(len(a) for a in frames)
    for member, d in enumerate(tiny_run.log_dirs):
        lg = ErrorLog.open(d)
        assert lg.n_atoms == n
        assert lg.members == [member]
        assert lg.epochs(member) == list(range(tiny_run.max_epochs))
        for e in lg.epochs(member):
            err = np.asarray(lg.read_epoch(e, member))
            assert err.shape == (n,) and np.all(np.isfinite(err)) and np.all(err >= 0)
        # species / reference force norms follow the training file's atom order
        assert np.array_equal(lg.species, np.concatenate([a.numbers for a in frames]))
        ref = np.concatenate([np.linalg.norm(a.get_forces(), axis=1) for a in frames])
        np.testing.assert_allclose(lg.ref_force_norm, ref, rtol=1e-6)
    # the two members start from different seeds: different error trajectories
    a, b = (ErrorLog.open(d) for d in tiny_run.log_dirs)
    assert a.fingerprint == b.fingerprint
    assert not np.allclose(a.read_epoch(0, 0), b.read_epoch(0, 1))


def test_fit_predict_matches_brute_force(tiny_run):
    est = LTAUEstimator.load(tiny_run.estimator_dir)
    logs = [ErrorLog.open(d) for d in tiny_run.log_dirs]
    assert est.n_train_ == logs[0].n_atoms
    assert est.fingerprint_ == logs[0].fingerprint
    assert est.summary_.n_members == 2
    assert est.species_ == [1, 8, 29]
    # default atol = final-epoch force MAE, averaged over members
    atol = np.mean([lg.read_epoch(lg.epochs(m)[-1], m).mean(dtype=np.float64)
                    for lg in logs for m in lg.members])
    assert est.atol_ == pytest.approx(atol, rel=1e-6)

    model = NequIPFeatureModel.from_file(tiny_run.checkpoint)
    train_desc = descriptors_for_dataset(model, tiny_run.train_xyz, progress=False)
    assert train_desc.shape == (logs[0].n_atoms, model.feature_dim)
    val = ase.io.read(tiny_run.val_xyz, ":")
    q = np.concatenate([model.evaluate(a).features for a in val])
    pred = est.predict(q)
    mu, sig, nn = _brute_force_prediction(train_desc, q, logs, est.atol_, est.k)
    np.testing.assert_array_equal(np.sort(pred.indices, 1), np.sort(nn, 1))
    np.testing.assert_allclose(pred.confidence, mu, atol=1e-6)
    np.testing.assert_allclose(pred.confidence_std, sig, atol=1e-6)
    np.testing.assert_allclose(pred.uncertainty, 1 - mu, atol=1e-6)
    assert 0.0 < pred.confidence.mean() < 1.0
    # a training structure queried against itself finds itself as nearest neighbour
    own = est.predict(train_desc[:50])
    assert np.all(own.distances[:, 0] < 1e-4)


def test_fit_cli_and_explicit_data(tiny_run, tmp_path):
    from ltau_md.cli import main

    out = tmp_path / "est_cli"
    rc = main(["fit", str(tiny_run.run_dirs[0]), str(tiny_run.run_dirs[1]),
               "--model", str(tiny_run.checkpoint), "--out", str(out), "--k", "4",
               "--window", "1:", "--data", str(tiny_run.train_xyz), "--no-progress"])
    assert rc == 0
    est = LTAUEstimator.load(out)
    assert est.k == 4 and est.summary_.n_epochs.tolist() == [tiny_run.max_epochs - 1] * 2
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["params"]["metadata"]["model"] == str(tiny_run.checkpoint.resolve())
    # same descriptors as the fixture's estimator (fitted from frames.traj): same index data
    ref = LTAUEstimator.load(tiny_run.estimator_dir)
    x = np.random.default_rng(0).normal(size=(5, est.dim_)).astype(np.float32)
    np.testing.assert_array_equal(est.kneighbors(x)[1], ref.kneighbors(x)[1][:, :4])


def test_fit_rejects_mismatched_runs(tiny_run, tmp_path):
    frames = ase.io.read(tiny_run.train_xyz, ":")
    other = tmp_path / "other_log"
    lg = ErrorLog.create(other, species=np.concatenate([a.numbers for a in frames[:-1]]),
                         frame_offsets=np.cumsum([0] + [len(a) for a in frames[:-1]]),
                         ref_force_norm=np.ones(sum(len(a) for a in frames[:-1])))
    lg.append(np.ones(lg.n_atoms))
    with pytest.raises(ArtifactError, match="different training sets"):
        fit_from_runs([tiny_run.run_dirs[0], other], tiny_run.checkpoint, tmp_path / "e",
                      progress=False)
    # structures in another order than the log's: fingerprint check refuses them
    shuffled = tmp_path / "shuffled.xyz"
    ase.io.write(shuffled, frames[::-1])
    with pytest.raises(ArtifactError, match="fingerprint"):
        fit_from_runs([tiny_run.run_dirs[0]], tiny_run.checkpoint, tmp_path / "e",
                      data=shuffled, progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ArtifactError, match="no ltau-md error log"):
        find_error_log(tmp_path / "empty")


def test_fit_stores_alarm_statistics_from_validation_or_training_loo(tiny_run, tmp_path):
    from ltau_md.cli import main

    # the callback saved the run's validation frames next to the log; fit uses them by default
    val = ase.io.read(tiny_run.val_xyz, ":")
    saved = ase.io.read(tiny_run.log_dir / VALIDATION_FILE, ":")
    assert len(saved) == len(val) == 8
    for a, b in zip(saved, val, strict=True):
        np.testing.assert_allclose(a.positions, b.positions, atol=1e-5)
        assert list(a.numbers) == list(b.numbers)
    fixture = LTAUEstimator.load(tiny_run.estimator_dir)
    assert {v["source"] for v in fixture.alarm_statistics_.values()} == {"validation"}
    assert fixture.metadata["validation"].endswith(VALIDATION_FILE)
    # without any validation frames: novelty from the training LOO novelty
    bare = tmp_path / "log_without_validation"
    shutil.copytree(tiny_run.log_dir, bare)
    (bare / VALIDATION_FILE).unlink()
    ref = fit_from_runs([bare], tiny_run.checkpoint, tmp_path / "est_loo", k=10,
                        progress=False)
    loo = ref.alarm_statistics_
    # the default alarm's signals are fitted too; their statistics are of the training atoms
    maxima = {f"{s}:max" for s in DEFAULT_SIGNALS}
    assert set(loo) == {"novelty:max", "novelty:mean", *maxima, DEFAULT_ALARM}
    assert set(ref.signals_) == set(DEFAULT_SIGNALS)
    assert {loo[k]["source"] for k in (*maxima, DEFAULT_ALARM)} == {"training"}
    assert loo["novelty:max"]["source"] == "training-loo"
    off = ErrorLog.open(tiny_run.log_dir).frame_offsets
    want = sorted(ref.train_novelty_[a:b].max() for a, b in zip(off[:-1], off[1:], strict=True))
    np.testing.assert_allclose(loo["novelty:max"]["values"], want, rtol=1e-6)
    assert ref.calibration_ is None  # alarm statistics do not make a calibration

    out = tmp_path / "est_val"
    assert main(["fit", str(tiny_run.run_dirs[0]), str(tiny_run.run_dirs[1]), "--model",
                 str(tiny_run.checkpoint), "--out", str(out), "--validation",
                 str(tiny_run.val_xyz), "--no-progress",
                 "--alarm-stats", "novelty+doptimality/element:max"]) == 0  # one besides
    est = LTAUEstimator.load(out)
    th = est.alarm_statistics_
    assert set(th) == {"novelty:max", "novelty:mean", "uncertainty:max", "uncertainty:mean",
                       *maxima, DEFAULT_ALARM, "novelty+doptimality/element:max"}
    assert {v["source"] for v in th.values()} == {"validation"}
    model = NequIPFeatureModel.from_file(tiny_run.checkpoint)
    nov_max, unc_mean, dopt_max, nov, dopt = [], [], [], [], []
    for a in val:
        feats = model.evaluate(a).features
        p = est.predict(feats, species=a.numbers)
        nov_max.append(p.novelty.max())
        unc_mean.append(p.uncertainty.mean())
        dopt_max.append(est.signals_["doptimality"].score(feats, a.numbers).max())
        nov.append(p.novelty)
        dopt.append(est.signals_["doptimality"].score(feats, a.numbers))
    _, loo = fit_combined("novelty+doptimality/element", "max",
                          {"novelty": np.concatenate(nov), "doptimality": np.concatenate(dopt)},
                          np.cumsum([0] + [len(a) for a in val]),
                          np.concatenate([a.numbers for a in val]))
    np.testing.assert_allclose(th["novelty+doptimality/element:max"]["values"], np.sort(loo),
                               rtol=1e-5)
    np.testing.assert_allclose(th["doptimality:max"]["values"], sorted(dopt_max), rtol=1e-5)
    np.testing.assert_allclose(th["novelty:max"]["values"], sorted(nov_max), rtol=1e-5)
    np.testing.assert_allclose(th["uncertainty:mean"]["values"], sorted(unc_mean), rtol=1e-5)
    assert th["novelty:max"]["n_frames"] == len(val)


def test_a_run_given_twice_is_dropped_with_a_warning(tiny_run, tmp_path):
    with pytest.warns(UserWarning, match="given twice"):
        est = fit_from_runs([tiny_run.run_dirs[0], tiny_run.run_dirs[0]], tiny_run.checkpoint,
                            tmp_path / "e", k=10, progress=False, signals=())
    assert est.summary_.n_members == 1


@pytest.mark.parametrize("case", ["window", "validation", "data", "k", "alarm_stats"])
def test_fit_refuses_bad_inputs_before_loading_the_model(tiny_run, tmp_path, monkeypatch,
                                                         capsys, case):
    """Errors in the inputs come before the model load and the descriptor pass (they came
    17-28 s in): the model loader is made to fail, so only an early refusal passes."""
    from ltau_md.cli import main

    def no_load(*args, **kwargs):
        raise AssertionError("the model was loaded before the inputs were checked")

    monkeypatch.setattr(NequIPFeatureModel, "from_file", no_load)
    args = ["fit", *map(str, tiny_run.run_dirs), "--model", str(tiny_run.checkpoint),
            "--out", str(tmp_path / "est"), "--no-progress"]
    extra, expected = {
        "alarm_stats": (["--alarm-stats", "llpr:max"], "needs the signal 'llpr'"),
        "window": (["--window", "50:60"], "window"),
        "validation": (["--validation", str(tmp_path / "nope.xyz")], "nope.xyz does not exist"),
        "data": (["--data", str(tmp_path / "nope.xyz")], "nope.xyz does not exist"),
        "k": (["--k", "100000"], "exceeds the"),
    }[case]
    rc = main([*args, *extra])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert expected in err.strip().splitlines()[-1]
    assert not (tmp_path / "est").exists()
