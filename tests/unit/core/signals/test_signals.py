"""Latent signals against independent brute-force references: the GMM's NLL against scipy's
multivariate normal, the single Gaussian's against the training atoms' own mean and
covariance, MaxVol's gamma against determinant ratios, LLPR against a direct solve."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy.stats import multivariate_normal

from ltau_md.core.exceptions import InvalidParameterError, NotFittedError
from ltau_md.core.signals import (
    LLPR,
    SIGNAL_CLASSES,
    ClusteredDOptimality,
    DOptimality,
    GaussianDensity,
    GMMDensity,
    make_signal,
    maxvol,
)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    # two elements, two blobs each, 4-D features
    x = np.concatenate([rng.normal(0, 1, (300, 4)) + 4 * (i % 2) for i in range(4)])
    z = np.repeat([1, 1, 6, 6], 300)
    return x, z, rng


def test_gmm_nll_equals_scipy_mixture(data):
    x, z, rng = data
    g = GMMDensity(n_components=(1, 2, 3)).fit(x, z)
    assert g.chosen_components_[1] >= 2            # two blobs: BIC takes more than one
    q = rng.normal(2, 2, (20, 4))
    qz = np.repeat([1, 6], 10)
    got = g.score(q, qz)
    for i in range(20):
        e = g.elements_[int(qz[i])]
        xs = (q[i] - e["mean"]) / e["std"]
        dens = sum(w * multivariate_normal(m, np.linalg.inv(p @ p.T)).pdf(xs)
                   for w, m, p in zip(e["weights"], e["means"], e["precisions_cholesky"],
                                      strict=True))
        assert got[i] == pytest.approx(-np.log(dens), rel=1e-8)
    # far from the data is less likely than the data itself
    assert g.score(x[:10] + 30, z[:10]).min() > g.score(x, z).max()


def test_gaussian_nll_is_the_training_atoms_own_normal(data):
    """One Gaussian per element: the normal of the element's standardised training atoms'
    mean and (maximum-likelihood) covariance + reg_covar I, however many blobs they form."""
    x, z, rng = data
    g = GaussianDensity(reg_covar=1e-3).fit(x, z)
    assert g.chosen_components_ == {1: 1, 6: 1}
    q = rng.normal(2, 2, (20, 4))
    qz = np.repeat([1, 6], 10)
    got = g.score(q, qz)
    for e in (1, 6):
        xe = x[z == e]
        mean, std = xe.mean(axis=0), xe.std(axis=0)
        xs = (xe - mean) / std
        normal = multivariate_normal(xs.mean(axis=0),
                                     np.cov(xs, rowvar=False, bias=True) + 1e-3 * np.eye(4))
        want = -normal.logpdf((q[qz == e] - mean) / std)
        np.testing.assert_allclose(got[qz == e], want, rtol=1e-6)


def test_maxvol_gamma_is_a_determinant_ratio_and_at_most_one_on_training():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(60, 3))
    rows, a_inv = maxvol(x, tol=1.0 + 1e-9)
    a = x[rows]
    det = abs(np.linalg.det(a))
    b = x @ a_inv
    assert np.abs(b).max() <= 1 + 1e-6
    # |(x A^-1)_j| = |det A with row j replaced by x| / |det A| (Cramer)
    for i, j in itertools.product(range(0, 60, 7), range(3)):
        rep = a.copy()
        rep[j] = x[i]
        assert abs(b[i, j]) == pytest.approx(abs(np.linalg.det(rep)) / det, rel=1e-8)
    # locally maximal volume: no single swap increases |det A|
    for i, j in itertools.product(range(60), range(3)):
        rep = a.copy()
        rep[j] = x[i]
        assert abs(np.linalg.det(rep)) <= det * (1 + 1e-6)


def test_doptimality_grades(data):
    x, z, _ = data
    d = DOptimality().fit(x, z)
    assert d.score(x, z).max() <= 1.01 + 1e-9       # the training atoms interpolate
    assert d.score(3 * x[:50], z[:50]).max() > 1.5  # scaled out: extrapolation
    s = d.active_sets_[1][0]
    xz = x[z == 1]
    brute = np.abs(xz @ np.linalg.inv(xz[s["rows"]])).max(axis=1)
    assert np.allclose(d.score(xz, z[z == 1]), brute, rtol=1e-8)


def test_clustered_doptimality_sees_what_the_global_span_hides():
    rng = np.random.default_rng(2)
    # two clusters in different planes of 4-D space: A in dims 0-1, B in dims 2-3 (far off)
    a = np.c_[rng.normal(0, 1, (400, 2)), rng.normal(0, 0.01, (400, 2))]
    b = np.c_[rng.normal(0, 0.01, (400, 2)), rng.normal(0, 1, (400, 2))] + [0, 0, 20, 20]
    x, z = np.r_[a, b], np.ones(800, int)
    c = ClusteredDOptimality(n_clusters=2, min_per_dim=5).fit(x, z)
    assert len(c.active_sets_[1]) == 2
    assert c.score(x, z).max() <= 1.01 + 1e-9
    q = np.array([[0.5, 0.5, 1.0, 1.0]])            # by cluster A, out of its plane
    g_global = DOptimality().fit(x, z).score(q, [1])[0]
    g_local = c.score(q, [1])[0]
    assert g_global < 1 < g_local / 10              # global: interpolation; local: far out


def test_llpr_matches_a_direct_solve_and_fits_alpha(data):
    x, z, rng = data
    ll = LLPR(regularization=1e-3).fit(x, z)
    q = rng.normal(size=(7, 4))
    lam = 1e-3 * np.trace(x.T @ x) / 4
    want = np.sqrt([v @ np.linalg.solve(x.T @ x + lam * np.eye(4), v) for v in q])
    assert np.allclose(ll.score(q, np.ones(7, int)), want, rtol=1e-10)
    assert ll.energy_std(q) == pytest.approx(
        np.sqrt(q.sum(0) @ np.linalg.solve(x.T @ x + lam * np.eye(4), q.sum(0))))
    # held-out errors with sigma exactly 0.3 x the rigidity: alpha comes back near 0.3
    u = ll.score(q.repeat(2000, 0), np.ones(14000, int))
    err = np.linalg.norm(rng.normal(size=(14000, 3)) * 0.3 * u[:, None], axis=1)
    ll.fit_regularization(q.repeat(2000, 0), err, grid=(1e-3,))
    assert ll.alpha_ == pytest.approx(0.3, rel=0.03)


@pytest.mark.parametrize("name", sorted(SIGNAL_CLASSES))
def test_every_signal_round_trips_and_checks_input(name, data):
    x, z, _ = data
    sig = make_signal(name)
    with pytest.raises(NotFittedError):
        sig.score(x[:2], z[:2])
    params = sig.get_params()
    sig.fit(x, z)
    assert sig.get_params() == params                # fit leaves parameters as given
    meta, arrays = sig.state()
    back = type(sig).from_state(meta, arrays)
    assert np.array_equal(back.score(x[:50], z[:50]), sig.score(x[:50], z[:50]))
    # an element outside the training species is as novel as can be: +inf, while the
    # known atoms of the same call score as they do alone
    mixed = sig.score(x[[0, 1, 900]], np.array([1, 8, 6]))
    assert mixed[1] == np.inf
    assert np.array_equal(mixed[[0, 2]], sig.score(x[[0, 900]], np.array([1, 6])))
    assert np.isfinite(mixed[[0, 2]]).all()


def test_bad_parameters_name_themselves():
    with pytest.raises(InvalidParameterError, match="n_components"):
        GMMDensity(n_components=()).fit(np.ones((20, 2)), np.ones(20, int))
    with pytest.raises(InvalidParameterError, match="unknown signal 'nope'"):
        make_signal("nope")
