"""DiagGMMClassifier: Gaussian naive Bayes in one labelled pass, equal to scikit-learn's
GaussianNB (fit and partial_fit), and semi-supervised EM whose unlabelled rows help."""

import dask.array as da
import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.naive_bayes import GaussianNB
from sklearn.utils.estimator_checks import parametrize_with_checks

from diaggmm_dist import DiagGMMClassifier

RTOL = 1e-10


def relative(a, b):
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-300)))


def labelled_data(n=3000, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, n) * 3 + 1  # classes 1, 4, 7, 10
    X = rng.normal(size=(n, 5)) * [1, 2, 3, 4, 5] + 10 + y[:, None] * [0.3, 0, -0.2, 0.1, 0]
    return X, y


def assert_same_as_gaussian_nb(clf, gnb, X):
    assert np.array_equal(clf.classes_, gnb.classes_)
    assert relative(clf.theta_, gnb.theta_) < RTOL
    assert relative(clf.var_, gnb.var_) < RTOL
    assert relative(clf.class_prior_, gnb.class_prior_) < RTOL
    assert relative(clf.class_count_, gnb.class_count_) < RTOL
    assert abs(clf.epsilon_ / gnb.epsilon_ - 1) < RTOL
    proba, expected = clf.predict_proba(X), gnb.predict_proba(X)
    assert relative(proba, expected) < RTOL
    assert np.allclose(clf.predict_log_proba(X), gnb.predict_log_proba(X), rtol=RTOL, atol=0)
    assert np.array_equal(clf.predict(X), gnb.predict(X))


@pytest.mark.parametrize("weighted", [False, True])
def test_all_rows_labelled_is_gaussian_nb_in_one_pass(weighted, monkeypatch):
    from diaggmm_dist import engine

    X, y = labelled_data()
    weights = np.random.default_rng(1).uniform(0.2, 3.0, len(y)) if weighted else None
    passes = []
    real = engine.pass_statistics
    monkeypatch.setattr(
        engine, "pass_statistics", lambda *a, **k: passes.append(1) or real(*a, **k)
    )
    clf = DiagGMMClassifier(chunk_size=700).fit(X, y, sample_weight=weights)
    assert len(passes) == 1 and clf.n_iter_ == 1  # its one pass
    assert_same_as_gaussian_nb(clf, GaussianNB().fit(X, y, sample_weight=weights), X)


def test_digits_and_priors_and_var_smoothing_match_gaussian_nb():
    # digits: integer pixels, many features constant within a class (variance epsilon_ only)
    X, y = load_digits(return_X_y=True)
    for params in ({}, {"var_smoothing": 0.05}, {"priors": np.full(10, 0.1)}):
        clf = DiagGMMClassifier(chunk_size=500, **params).fit(X, y)
        assert_same_as_gaussian_nb(clf, GaussianNB(**params).fit(X, y), X)


def test_partial_fit_matches_gaussian_nb_batch_by_batch():
    X, y = labelled_data(seed=2)
    weights = np.random.default_rng(3).uniform(0.5, 2.0, len(y))
    gnb, clf = GaussianNB(), DiagGMMClassifier(chunk_size=300)
    classes = [1, 4, 7, 10, 13]  # 13 never appears: its prior stays 0
    for start in range(0, len(y), 1000):
        rows = slice(start, start + 1000)
        gnb.partial_fit(X[rows], y[rows], classes=classes, sample_weight=weights[rows])
        clf.partial_fit(X[rows], y[rows], classes=classes, sample_weight=weights[rows])
        assert np.array_equal(clf.classes_, gnb.classes_)
        assert relative(clf.theta_, gnb.theta_) < RTOL
        assert np.allclose(clf.var_, gnb.var_, rtol=RTOL, atol=1e-300)
        assert relative(clf.class_prior_, gnb.class_prior_) < RTOL
        assert abs(clf.epsilon_ / gnb.epsilon_ - 1) < RTOL  # each batch's own, as sklearn's


def test_partial_fit_refusals():
    X, y = labelled_data(n=200)
    with pytest.raises(ValueError, match="classes must be passed on the first call"):
        DiagGMMClassifier().partial_fit(X, y)
    clf = DiagGMMClassifier().partial_fit(X, y, classes=[1, 4, 7, 10])
    with pytest.raises(ValueError, match="not the same as on the first call"):
        clf.partial_fit(X, y, classes=[1, 4])
    with pytest.raises(ValueError, match=r"label\(s\) \[10\], which are not among the classes"):
        DiagGMMClassifier().partial_fit(X, y, classes=[1, 4, 7])
    with pytest.raises(ValueError, match="X has 3 features, but DiagGMMClassifier is expecting 5"):
        clf.partial_fit(X[:, :3], y)
    with pytest.raises(AttributeError, match="partial_fit") as error:
        DiagGMMClassifier(2).partial_fit(X, y, classes=[1, 4, 7, 10])
    assert "n_components_per_class=1" in str(error.value.__cause__)
    assert not hasattr(DiagGMMClassifier(2), "partial_fit")
    semi = y.copy()
    semi[::2] = -1
    with pytest.raises(ValueError, match="fitted by EM"):
        DiagGMMClassifier().fit(X, semi).partial_fit(X, y)
    refit = DiagGMMClassifier().fit(X, y).set_params(n_components_per_class=2).fit(X, y)
    assert not hasattr(refit, "theta_") and refit.means_.shape == (8, 5)
    with pytest.raises(ValueError, match=r"class\(es\) \[4\] have no labelled row"):
        DiagGMMClassifier(2).fit(X, y, sample_weight=(y != 4).astype(float))
    with pytest.raises(ValueError, match="1 sample"):
        DiagGMMClassifier(2).fit(X[:1], y[:1])


def test_on_a_cluster_equals_on_threads(local_cluster):
    from distributed import Client

    X, y = labelled_data(n=2000)
    y = y.copy()
    y[::4] = -1
    Xd, yd = da.from_array(X, chunks=250), da.from_array(y, chunks=250)
    local = DiagGMMClassifier(max_iter=5, tol=0).fit(Xd, yd)
    with Client(local_cluster):
        remote = DiagGMMClassifier(max_iter=5, tol=0).fit(Xd, yd)
    assert local.n_iter_ == remote.n_iter_ == 5
    assert np.array_equal(local.means_, remote.means_)  # the same sums, to the bit
    assert local.lower_bounds_ == remote.lower_bounds_


def digits_split(fraction, seed=0):
    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=0.3, stratify=y, random_state=seed
    )
    n = max(10, round(fraction * len(y_train)))
    labelled, _ = train_test_split(
        np.arange(len(y_train)), train_size=n, stratify=y_train, random_state=seed
    )
    partial = np.full_like(y_train, -1)
    partial[labelled] = y_train[labelled]
    return X_train, partial, labelled, X_test, y_test


def test_unlabelled_rows_help_on_digits_at_one_percent():
    # the configuration of bench/semi_supervised.py (its table in bench/FINDINGS.md)
    X_train, partial, labelled, X_test, y_test = digits_split(0.01)
    semi = DiagGMMClassifier(var_smoothing=0.1).fit(X_train, partial)
    alone = GaussianNB(var_smoothing=0.1).fit(X_train[labelled], partial[labelled])
    default = GaussianNB().fit(X_train[labelled], partial[labelled])
    assert semi.n_unlabelled_ == len(partial) - len(labelled) and semi.n_iter_ > 1
    accuracy = semi.score(X_test, y_test)
    assert accuracy > alone.score(X_test, y_test) + 0.05
    assert accuracy > default.score(X_test, y_test) + 0.05


def test_semi_supervised_em_keeps_labels_and_improves_its_bound():
    X, y = labelled_data(n=2000, seed=4)
    partial = y.copy()
    partial[np.random.default_rng(5).random(len(y)) < 0.8] = -1
    clf = DiagGMMClassifier(2, var_smoothing=1e-3, tol=1e-6).fit(X, partial)
    assert clf.means_.shape == (8, 5) and clf.component_classes_.tolist() == [
        0,
        0,
        1,
        1,
        2,
        2,
        3,
        3,
    ]
    assert np.all(np.diff(clf.lower_bounds_) > -1e-9)  # EM never lowers its objective
    proba = clf.predict_proba(X)
    assert proba.shape == (2000, 4) and np.allclose(proba.sum(axis=1), 1.0)
    assert set(np.unique(clf.predict(X))) <= {1, 4, 7, 10}
    assert np.isclose(clf.class_prior_.sum(), 1.0)
    fixed = DiagGMMClassifier(priors=[0.1, 0.2, 0.3, 0.4], max_iter=3).fit(X, partial)
    assert np.allclose(fixed.class_prior_, [0.1, 0.2, 0.3, 0.4])


def expected_failures(estimator):
    # -1 marks an unlabelled row (as in sklearn.semi_supervised): that check's labels are -1, 1
    return {"check_classifiers_classes": "its binary labels are -1 and 1; -1 means unlabelled"}


@parametrize_with_checks(
    [DiagGMMClassifier(), DiagGMMClassifier(2)], expected_failed_checks=expected_failures
)
def test_scikit_learn_estimator_check(estimator, check):
    check(estimator)


def test_missing_values_marginalized_are_per_feature_naive_bayes():
    X, y = labelled_data(n=1000, seed=6)
    X[np.random.default_rng(7).random(X.shape) < 0.1] = np.nan
    clf = DiagGMMClassifier(missing="marginalize").fit(X, y)
    for index, label in enumerate(clf.classes_):
        rows = X[y == label]
        assert relative(clf.theta_[index], np.nanmean(rows, axis=0)) < RTOL
        assert relative(clf.var_[index], np.nanvar(rows, axis=0) + clf.epsilon_) < RTOL
    assert np.isclose(clf.epsilon_, 1e-9 * np.nanvar(X, axis=0).max(), rtol=RTOL)
    proba = clf.predict_proba(X)
    assert np.allclose(proba.sum(axis=1), 1.0) and not np.isnan(proba).any()
    with pytest.raises(ValueError, match="NaN"):
        DiagGMMClassifier().fit(X, y)


def test_float32_passes_agree_with_float64():
    X, y = labelled_data(n=2000, seed=8)
    partial = y.copy()
    partial[::2] = -1
    for labels in (y, partial):
        wide = DiagGMMClassifier(max_iter=3, tol=0).fit(X, labels)
        narrow = DiagGMMClassifier(max_iter=3, tol=0, dtype="float32").fit(X, labels)
        assert np.allclose(narrow.means_, wide.means_, rtol=1e-5)
        assert np.allclose(narrow.covariances_, wide.covariances_, rtol=1e-4)


def reference_semi_supervised_em(X, labels, n_classes, epsilon, n_iter):
    """Nigam et al.'s EM in plain numpy: labelled rows one-hot, unlabelled rows posteriors."""
    one_hot = np.eye(n_classes)[np.maximum(labels, 0)]
    resp = np.where(labels[:, None] >= 0, one_hot, 0.0)
    history = []
    for _ in range(n_iter + 1):
        mass = resp.sum(axis=0)
        weights = mass / mass.sum()
        means = resp.T @ X / mass[:, None]
        variances = np.stack([resp[:, k] @ (X - means[k]) ** 2 / mass[k] for k in range(n_classes)])
        variances += epsilon
        history.append((weights, means, variances))
        log_joint = np.log(weights) - 0.5 * (
            np.log(2 * np.pi * variances).sum(axis=1)
            + (((X[:, None, :] - means) ** 2) / variances).sum(axis=2)
        )
        posterior = np.exp(log_joint - log_joint.max(axis=1, keepdims=True))
        posterior /= posterior.sum(axis=1, keepdims=True)
        resp = np.where(labels[:, None] >= 0, one_hot, posterior)
    return history


def test_semi_supervised_em_is_nigams_em():
    X, y = labelled_data(n=1500, seed=9)
    partial = np.searchsorted([1, 4, 7, 10], y)
    partial[np.random.default_rng(10).random(len(y)) < 0.7] = -1
    clf = DiagGMMClassifier(max_iter=4, tol=0, var_smoothing=1e-3, chunk_size=400)
    clf.fit(X, partial)
    weights, means, variances = reference_semi_supervised_em(X, partial, 4, clf.epsilon_, 4)[-1]
    assert clf.n_iter_ == 4
    assert relative(clf.means_, means) < 1e-9
    assert relative(clf.covariances_, variances) < 1e-9
    assert relative(clf.weights_, weights) < 1e-9


def test_all_labelled_mixture_discriminant_analysis_is_em_within_each_class():
    from diaggmm_dist import DiagGMM
    from diaggmm_dist.classifier_fit import within_class_components

    X, y = labelled_data(n=2000, seed=11)
    clf = DiagGMMClassifier(2, max_iter=5, tol=0, var_smoothing=1e-4).fit(X, y)
    for index, label in enumerate(clf.classes_):
        rows = X[y == label]
        w, m, v, _ = within_class_components(
            [1.0], [rows.mean(axis=0)], [rows.var(axis=0) + clf.epsilon_], 2
        )
        alone = DiagGMM(
            2, weights_init=w, means_init=m, precisions_init=1 / v, reg_covar=clf.epsilon_,
            tol=0, max_iter=5,
        ).fit(rows)  # fmt: skip
        own = clf.component_classes_ == index
        assert relative(clf.means_[own], alone.means_) < 1e-9
        assert relative(clf.covariances_[own], alone.covariances_) < 1e-9
        assert relative(clf.weights_[own] / clf.weights_[own].sum(), alone.weights_) < 1e-9
