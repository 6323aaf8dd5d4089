"""md/relax policy options: --signal/--on/--select, --X-above/--X-rate, the default policy."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from ltau_md.cli import build_parser
from ltau_md.cli._policies import policy_factory
from ltau_md.core.estimator import InDomainStatistics
from ltau_md.core.exceptions import LTAUError

VALUES = {"values": [float(v) for v in range(1, 200)], "n_frames": 199, "source": "held-out"}


def estimator(*keys):
    return SimpleNamespace(calibration_=None,
                           alarm_statistics_=InDomainStatistics({k: VALUES for k in keys}))


def parse(cmd, *opts):
    return build_parser().parse_args([cmd, "s.xyz", "--model", "m", "--estimator", "e",
                                      "--out", "o", *opts])


def described(pols):
    return [(p.action, p.signal, p.on, p.select, p.above, p.alarm_rate, p.patience)
            for p in pols]


def test_rates_and_fixed_thresholds_give_the_right_policies():
    args = parse("md", "--stop-rate", "0.05", "--warn-above", "0.4", "--on", "q90",
                 "--select", "tags=2,1", "--patience", "3")
    est = estimator("novelty:q90@tags=1,2")
    pols = policy_factory(args, est, "md")()
    assert described(pols) == [("stop", "novelty", "q90", "tags=1,2", None, 0.05, 3),
                               ("warn", "uncertainty", "q90", "tags=1,2", 0.4, None, 3)]
    # k = ceil(200 * 0.95) = 190th smallest
    assert pols[0].resolve(SimpleNamespace(estimator=est)) == 190.0
    args = parse("relax", "--signal", "novelty", "--resample-above", "3.5",
                 "--resample-rate", "0.1", "--hysteresis", "0.5")
    pols = policy_factory(args, estimator("novelty:max"), "relax")()
    assert described(pols) == [("resample", "novelty", "max", None, 3.5, None, 1),
                               ("resample", "novelty", "max", None, None, 0.1, 1)]
    assert pols[0].hysteresis == 0.5


@pytest.mark.parametrize("cmd,action,patience", [("md", "stop", 2), ("relax", "warn", 1)])
def test_default_policy_only_with_the_in_domain_statistic(cmd, action, patience, capsys):
    make = policy_factory(parse(cmd), estimator("novelty:max"), cmd)
    assert described(make()) == [(action, "novelty", "max", None, None, 0.01, patience)]
    assert make() is not make() and make()[0] is not make()[0]   # fresh per structure
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"default policy: {action} when novelty:max exceeds " \
        "198 (in-domain alarm rate 0.01, from 199 held-out frames)" in err
    make = policy_factory(parse(cmd, "--select", "tags=2"), estimator("novelty:max"), cmd)
    assert make() == []
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no default" in err and "novelty:max@tags=2" in err
    assert policy_factory(parse(cmd), estimator(), cmd)() == []  # no statistics
    pols = policy_factory(parse(cmd, "--patience", "5"), estimator("novelty:max"), cmd)()
    assert pols[0].patience == 5


def test_missing_in_domain_statistic_fails_before_any_run():
    with pytest.raises(LTAUError, match="novelty:mean"):
        policy_factory(parse("md", "--stop-rate", "0.01", "--on", "mean"),
                       estimator("novelty:max"), "md")


@pytest.mark.parametrize("opts", [["--stop-rate", "0"], ["--warn-rate", "1"],
                                  ["--on", "median"], ["--select", "adsorbate"],
                                  ["--patience", "0"], ["--stop-above", "nan"]])
def test_out_of_range_options_are_refused_by_argparse(opts, capsys):
    with pytest.raises(SystemExit) as exc:
        parse("md", *opts)
    assert exc.value.code == 2
    assert "error: argument" in capsys.readouterr().err


@pytest.mark.parametrize("opts,msg", [
    (["--stop-above", "1.5"], "argument --stop-above: must be a number in [0, 1), got '1.5'"),
    (["--stop-above", "3", "--signal", "confidence"], "--stop-above: must be a number in [0, 1)"),
    (["--warn-above", "-1", "--signal", "novelty"], "--warn-above: must be a number >= 0"),
    (["--signal", "bogus"], "argument --signal: must be one of uncertainty, confidence"),
    (["--signal", "gmm+"], "argument --signal: must be one of uncertainty, confidence"),
    (["--signal", "gmm+bogus/element"], "or parts of them joined by '+'"),
    (["--hysteresis", "2"], "argument --hysteresis: must be a number in [0, 1], got '2'"),
])
def test_signal_dependent_ranges_are_refused_like_argparse(opts, msg, capsys):
    """--X-above and --hysteresis are on the scale of --signal (uncertainty when not given),
    whatever the order of the options; refused with argparse's usage and exit status 2."""
    with pytest.raises(SystemExit) as exc:
        policy_factory(parse("md", *opts), estimator("novelty:max"), "md")
    assert exc.value.code == 2
    assert msg in capsys.readouterr().err.strip().splitlines()[-1]


def test_thresholds_on_unbounded_signals_may_exceed_one():
    for opts in (["--stop-above", "5", "--signal", "novelty"],
                 ["--signal", "predicted_error", "--stop-above", "0.3", "--hysteresis", "2"],
                 ["--signal", "shallow_ensemble", "--stop-above", "1.2"],   # a model's own
                 ["--signal", "gmm+clustered_doptimality/element", "--stop-above", "9"]):
        args = parse("md", *opts)
        pols = policy_factory(args, estimator(), "md")()
        assert [p.above for p in pols] == [float(opts[opts.index("--stop-above") + 1])]


def test_alarm_off_reason_names_the_frames_a_rate_needs():
    from ltau_md.cli._policies import policy_off_reason

    def entry(n):
        return {"values": list(range(n)), "n_frames": n, "source": "validation"}

    assert policy_off_reason("gmm:max", entry(99), 0.01) is None       # 99 = 1/0.01 - 1
    why = policy_off_reason("gmm:max", entry(98), 0.01)
    assert "98 validation frames of gmm:max" in why and "needs >= 99" in why
    assert "resolve rates >= 0.0101" in why
    assert policy_off_reason("gmm:max", entry(19), 0.05) is None
    assert policy_off_reason("gmm:max", None, 0.01) is None            # missing: said elsewhere
