"""Selection of the frames to label: alarm windows by hand, the greedy D-optimal batch
against brute-force determinant maximisation."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from ltau_md.workflows.learn import alarm_windows, d_optimal_selection


def _logdet_objective(cands, ref, subset, ridge=1e-3):
    """sum over elements of log det(X^T X + ridge) with the subset's atoms added, minus
    without: computed from scratch for every subset (independent of the greedy updates)."""
    x0, z0 = ref
    total = 0.0
    elements = set(np.unique(z0)) | {int(e) for i in subset for e in cands[i][1]}
    for e in elements:
        base = x0[z0 == e]
        m0 = base.T @ base
        r = max(ridge * np.trace(m0) / m0.shape[0], 1e-12) if base.size else ridge
        m0 = m0 + r * np.eye(x0.shape[1])
        m = m0.copy()
        for i in subset:
            xe = cands[i][0][cands[i][1] == e]
            m += xe.T @ xe
        total += np.linalg.slogdet(m)[1] - np.linalg.slogdet(m0)[1]
    return total


def _case(seed, n_cand=7, dim=4):
    rng = np.random.default_rng(seed)
    ref = (rng.normal(size=(30, dim)) * [1, 1, 0.05, 0.05], rng.choice([1, 6], 30))
    cands = []
    for _ in range(n_cand):
        n = rng.integers(2, 5)
        scale = rng.uniform(0.1, 1.5, dim)
        cands.append((rng.normal(size=(n, dim)) * scale, rng.choice([1, 6], n)))
    return cands, ref


@pytest.mark.parametrize("seed", range(5))
def test_each_greedy_pick_is_the_brute_force_best_next_frame(seed):
    cands, ref = _case(seed)
    chosen = d_optimal_selection(cands, ref, batch_size=4, min_gain=0.0)
    for k in range(len(chosen)):
        rest = [i for i in range(len(cands)) if i not in chosen[:k]]
        best = max(rest, key=lambda i: _logdet_objective(cands, ref, chosen[:k] + [i]))
        assert chosen[k] == best


@pytest.mark.parametrize("seed", range(5))
def test_greedy_batch_is_near_the_brute_force_optimum(seed):
    """log det is submodular: greedy reaches at least (1 - 1/e) of the best subset's gain;
    on these small cases it reaches at least 95 % of it."""
    cands, ref = _case(seed)
    chosen = d_optimal_selection(cands, ref, batch_size=3, min_gain=0.0)
    best = max(_logdet_objective(cands, ref, list(s))
               for s in itertools.combinations(range(len(cands)), 3))
    assert _logdet_objective(cands, ref, chosen) >= 0.95 * best


def test_near_duplicates_and_covered_directions_are_not_taken():
    rng = np.random.default_rng(1)
    ref = (rng.normal(size=(200, 3)), np.ones(200, int))
    new = np.array([[0.0, 0.0, 30.0]])            # far along a new direction
    cands = [(new, np.ones(1, int)), (new + 1e-6, np.ones(1, int)),   # its near-duplicate
             (rng.normal(size=(1, 3)) * 0.01, np.ones(1, int))]       # a covered point
    chosen = d_optimal_selection(cands, ref, batch_size=3, min_gain=0.01)
    assert len(chosen) == 1 and chosen[0] in (0, 1)  # one of the twins, not the covered point
    # without the duplicate rule the twin would come next (it still adds information)
    assert len(d_optimal_selection(cands, ref, batch_size=3, min_gain=0.01,
                                   duplicate_tol=0.0)) == 2


def test_a_new_element_is_taken_first():
    rng = np.random.default_rng(2)
    ref = (rng.normal(size=(50, 3)), np.full(50, 29))
    cands = [(rng.normal(size=(4, 3)) * 3, np.full(4, 29)), (rng.normal(size=(1, 3)), [8])]
    assert d_optimal_selection(cands, ref, batch_size=1)[0] == 1


def test_alarm_windows_keep_the_peak_of_each_run_of_alarms():
    v = [0.1, 0.9, 1.2, 0.8, 0.2, 0.3, 1.5, 0.1, 0.95]
    assert alarm_windows(range(9), v, threshold=0.5) == [2, 6, 8]
    assert alarm_windows(range(9), v, threshold=0.5, gap=3) == [6]  # one long window
    assert alarm_windows(range(9), v, threshold=5.0) == []
    # a long stretch of alarms is split into windows of at most max_length observations
    w = [2.0, 3.0, 2.5, 2.2, 4.0, 2.1, 2.0]
    assert alarm_windows(range(7), w, threshold=1.0) == [4]
    assert alarm_windows(range(7), w, threshold=1.0, max_length=3) == [1, 4, 6]
