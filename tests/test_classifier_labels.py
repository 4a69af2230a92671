"""DiagGMMClassifier's labels from every input kind, checked before any work; the labelled
passes of the engine against the plain E-step and by hand."""

import dask.array as da
import numpy as np
import pandas as pd
import pytest

from diaggmm_dist import DiagGMMClassifier, kernels


def data(n=600, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    X = rng.normal(size=(n, 3)) + y[:, None] * [2.0, -1.0, 0.5]
    y[::5] = -1
    return X, y


@pytest.fixture(scope="module")
def reference():
    X, y = data()
    return X, y, DiagGMMClassifier(max_iter=4, tol=0).fit(X, y)


def same_fit(clf, reference, classes=True):
    assert not classes or np.array_equal(clf.classes_, reference.classes_)
    assert np.allclose(clf.means_, reference.means_, rtol=1e-12)
    assert np.allclose(clf.covariances_, reference.covariances_, rtol=1e-12)


def test_labels_from_lists_series_and_dask(reference):
    X, y, fitted = reference
    for labels in (y.tolist(), pd.Series(y), da.from_array(y, chunks=77)):
        same_fit(DiagGMMClassifier(max_iter=4, tol=0).fit(X, labels), fitted)
    # dask rows and labels chunked differently: the labels follow the rows' chunks
    clf = DiagGMMClassifier(max_iter=4, tol=0).fit(
        da.from_array(X, chunks=100), da.from_array(y, chunks=250)
    )
    same_fit(clf, fitted)


def test_labels_as_strings_or_whole_floats_in_memory(reference):
    X, y, fitted = reference
    names = np.array(["ash", "birch", "cedar"], dtype=object)[y]
    names[y == -1] = -1  # unlabelled, as sklearn.semi_supervised takes object labels
    clf = DiagGMMClassifier(max_iter=4, tol=0).fit(X, names)
    same_fit(clf, fitted, classes=False)
    assert clf.classes_.tolist() == ["ash", "birch", "cedar"]
    assert set(clf.predict(X[:50])) <= {"ash", "birch", "cedar"}
    floats = DiagGMMClassifier(max_iter=4, tol=0).fit(X, y.astype(float))
    same_fit(floats, fitted)


def test_labels_from_a_zarr_array_and_its_path(reference, tmp_path):
    import zarr

    X, y, fitted = reference
    store = zarr.create_array(tmp_path / "labels.zarr", shape=y.shape, chunks=(128,), dtype="i2")
    store[:] = y
    for labels in (store, str(tmp_path / "labels.zarr")):
        same_fit(DiagGMMClassifier(max_iter=4, tol=0).fit(X, labels), fitted)


def test_labels_as_a_data_array_aligned_by_dims(reference):
    import xarray as xr

    X, y, fitted = reference
    grid = xr.DataArray(X.reshape(20, 30, 3), dims=("time", "cell", "band"))
    grid = grid.assign_coords(time=np.arange(20), cell=np.arange(30) * 10)
    labels = xr.DataArray(y.reshape(20, 30), dims=("time", "cell")).transpose("cell", "time")
    clf = DiagGMMClassifier(max_iter=4, tol=0).fit(grid, labels, feature_dim="band")
    same_fit(clf, fitted)
    proba = clf.predict_proba(grid)
    assert proba.dims == ("time", "cell", "class") and proba["class"].values.tolist() == [0, 1, 2]
    predicted = clf.predict(grid)
    assert predicted.dims == ("time", "cell") and list(predicted["cell"].values[:2]) == [0, 10]
    with pytest.raises(ValueError, match="exactly the sample dims"):
        clf.fit(grid, labels.isel(cell=0), feature_dim="band")


def test_labels_as_a_column_of_the_table(reference, tmp_path):
    X, y, fitted = reference
    frame = pd.DataFrame(X, columns=["a", "b", "c"]).assign(kind=y)
    clf = DiagGMMClassifier(max_iter=4, tol=0).fit(frame, "kind")
    same_fit(clf, fitted)
    assert clf.feature_names_in_.tolist() == ["a", "b", "c"]
    assert np.array_equal(clf.predict(frame), fitted.predict(X))  # the label column is skipped
    import dask.dataframe as dd

    lazy = dd.from_pandas(frame, npartitions=3)
    same_fit(DiagGMMClassifier(max_iter=4, tol=0).fit(lazy, "kind"), fitted)
    frame.to_parquet(tmp_path / "rows.parquet", row_group_size=150)
    stored = DiagGMMClassifier(max_iter=4, tol=0).fit(
        str(tmp_path / "rows.parquet"), "kind", columns=["a", "b", "c"]
    )
    same_fit(stored, fitted)
    with pytest.raises(ValueError, match="give columns"):
        DiagGMMClassifier().fit(str(tmp_path / "rows.parquet"), "kind")
    with pytest.raises(ValueError, match="names no column of X"):
        DiagGMMClassifier().fit(frame, "class")
    with pytest.raises(ValueError, match="also in columns"):
        DiagGMMClassifier().fit(frame, "kind", columns=["a", "kind"])


@pytest.mark.parametrize(
    "labels, error, message",
    [
        (np.zeros(599, dtype=int), ValueError, r"y has shape \(599,\), but X has \(600,\)"),
        (np.full(600, 0.5), ValueError, "Unknown label type: continuous"),
        (np.full(600, np.nan), ValueError, "Input y contains NaN"),
        (np.array(["a"] * 600, dtype=object)[:599], ValueError, r"y has shape \(599,\)"),
        (da.from_array(np.array(["a"] * 600)), TypeError, "must be in memory"),
        (None, ValueError, "requires y to be passed"),
        (np.full(600, -1), ValueError, "no labelled row"),
        (da.full(600, -1, chunks=100), ValueError, "no labelled row"),
        (pd.DataFrame({"a": np.zeros(600, int)}), TypeError, "one column of labels"),
    ],
)
def test_bad_labels_are_refused_before_any_pass(labels, error, message, monkeypatch):
    from diaggmm_dist import engine

    X, _ = data()
    monkeypatch.setattr(engine, "pass_statistics", lambda *a, **k: pytest.fail("a pass ran"))
    with pytest.raises(error, match=message):
        DiagGMMClassifier().fit(X, labels)


def test_bad_settings_and_priors_are_refused(monkeypatch):
    from diaggmm_dist import engine

    X, y = data()
    monkeypatch.setattr(engine, "pass_statistics", lambda *a, **k: pytest.fail("a pass ran"))
    for params, message in [
        ({"n_components_per_class": 0}, "n_components_per_class must be an integer >= 1"),
        ({"var_smoothing": -1.0}, "var_smoothing must be a finite number >= 0"),
        ({"missing": "zero"}, "missing must be one of"),
        ({"priors": [0.5, 0.5]}, "Number of priors must match number of classes"),
        ({"priors": [0.5, 0.5, 0.5]}, "The sum of the priors should be 1"),
    ]:
        with pytest.raises(ValueError, match=message):
            DiagGMMClassifier(**params).fit(X, y)
    with pytest.raises(ValueError, match="without -1"):
        DiagGMMClassifier().partial_fit(X, y, classes=[-1, 0, 1, 2])


def test_labelled_pass_without_labels_is_the_plain_e_step_to_the_bit():
    X, _ = data(n=20000, seed=3)  # three sub-blocks
    rng = np.random.default_rng(4)
    shift = np.array([1.0, -0.5, 0.25])
    coef = kernels.log_prob_coefficients(
        np.full(6, 1 / 6), rng.normal(size=(6, 3)), np.ones((6, 3)), shift, np.float64
    )
    plain = kernels.chunk_statistics(X, ("gaussian", coef))
    unlabelled = np.full(len(X), -1)
    classes = np.repeat(np.arange(3), 2)
    labelled = kernels.chunk_statistics(X, ("gaussian", coef, classes), labels=unlabelled)
    assert np.array_equal(plain, labelled)


def test_labelled_rows_share_their_class_components_only():
    X, y = data(n=50, seed=5)
    y[0] = 1
    rng = np.random.default_rng(6)
    weights, means = np.full(6, 1 / 6), rng.normal(size=(6, 3))
    shift = np.zeros(3)
    coef = kernels.log_prob_coefficients(weights, means, np.ones((6, 3)), shift, np.float64)
    classes = np.array([0, 0, 1, 1, 2, 2])
    stats = kernels.chunk_statistics(X, ("gaussian", coef, classes), labels=y)
    log_density = -0.5 * (((X[:, None, :] - means) ** 2).sum(-1) + 3 * np.log(2 * np.pi))
    joint = np.exp(log_density) * weights
    allowed = (y[:, None] == -1) | (classes[None, :] == y[:, None])
    resp = np.where(allowed, joint, 0.0)
    expected_mass = (resp / resp.sum(1, keepdims=True)).sum(0)
    assert np.allclose(stats[:6, 0], expected_mass, rtol=1e-12)
    assert np.isclose(stats[6, 0], np.log(resp.sum(1)).sum(), rtol=1e-12)
    counts = kernels.chunk_statistics(X, ("labels", shift, 3, np.float64), labels=y)
    assert counts[:3, 0].tolist() == [np.sum(y == c) for c in range(3)]
    assert counts[4, 0] == len(y)  # the data's own totals: every row once
