"""``DiagGMM.diagonal_fit_report`` and ``diaggmm info --against``: the cost of the diagonal.

The oracle computes the same cross-fitted figures row by row with scipy's multivariate
normal, from the model's own responsibilities: the one-pass moments must give them.
"""

from __future__ import annotations

import copy
import json

import dask.array as da
import numpy as np
import pytest
import xarray as xr
import zarr
from scipy.stats import multivariate_normal

from diaggmm_dist import DiagGMM, diagonal_check
from diaggmm_dist.cli import main

CORRELATION = np.array(
    [[1.0, 0.9, 0.0, 0.0], [0.9, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, -0.5], [0.0, 0.0, -0.5, 1.0]]
)


def correlated(n, seed):
    """Two groups of rows far apart, each with correlated features (offset from zero)."""
    rng = np.random.default_rng(seed)
    half = rng.multivariate_normal(np.zeros(4), CORRELATION, size=(2, n // 2))
    return np.concatenate([half[0] + 100.0, half[1] + 108.0])[rng.permutation(n)]


@pytest.fixture(scope="module")
def fitted():
    X = correlated(6000, 0)
    return DiagGMM(2, random_state=0).fit(X), correlated(4000, 1)


def oracle(model, X):
    """(diagonal, full) expected log-likelihood per row, per component and overall, row by row."""
    resp = model.predict_proba(X)
    folds = np.arange(X.shape[0]) % 2
    per_component = np.zeros((model.n_components, 2))
    for k in range(model.n_components):
        for held in (0, 1):
            r_fit, x_fit = resp[folds != held, k], X[folds != held]
            mean = r_fit @ x_fit / r_fit.sum()
            covariance = (r_fit[:, None] * (x_fit - mean)).T @ (x_fit - mean) / r_fit.sum()
            covariance += model.reg_covar * np.eye(X.shape[1])
            r, x = resp[folds == held, k], X[folds == held]
            for column, cov in enumerate((np.diag(np.diag(covariance)), covariance)):
                per_component[k, column] += r @ multivariate_normal(mean, cov).logpdf(x)
        per_component[k] += resp[:, k].sum() * np.log(model.weights_[k])
    return per_component, per_component.sum(axis=0) / X.shape[0], resp.sum(axis=0)


def test_the_one_pass_figures_equal_row_by_row_ones(fitted):
    model, X = fitted
    report = model.diagonal_fit_report(da.from_array(X, chunks=700))
    per_component, overall, mass = oracle(model, X)
    np.testing.assert_allclose([report.diagonal, report.full], overall, rtol=1e-9)
    assert report.gain == pytest.approx(overall[1] - overall[0], rel=1e-7)
    for c, component in enumerate(report.components):
        np.testing.assert_allclose(
            [component.diagonal, component.full], per_component[c] / mass[c], rtol=1e-9
        )
        assert component.mass == pytest.approx(mass[c], rel=1e-12)
    assert report.model_log_likelihood == pytest.approx(model.score(X), rel=1e-12)
    assert (report.n_rows, report.n_rows_left_out) == (4000, 0)


def test_correlated_features_are_reported_and_independent_ones_pass(fitted):
    model, X = fitted
    report = model.diagonal_fit_report(X)
    assert not report.is_diagonal_adequate()
    assert report.gain > 0.3  # log(1/(1-0.81))/2 + log(1/0.75)/2 ≈ 0.97 nats per row in theory
    for component in report.components:
        a, b, rho = component.correlations[0]
        assert {a, b} == {"x0", "x1"} and rho == pytest.approx(0.9, abs=0.05)
    rng = np.random.default_rng(2)
    independent = rng.normal(size=(6000, 4)) * [1.0, 2.0, 3.0, 4.0] + 50.0
    fine = DiagGMM(2, random_state=0).fit(independent[:3000])
    fine_report = fine.diagonal_fit_report(independent[3000:])
    assert fine_report.is_diagonal_adequate()
    assert abs(fine_report.gain) < 0.01
    assert "diagonal is fine" in fine_report.to_markdown()


def test_chunking_and_column_parts_change_nothing(fitted, monkeypatch):
    model, X = fitted
    whole = model.diagonal_fit_report(X)
    monkeypatch.setattr(diagonal_check, "MOMENT_VALUES_PER_TASK", 2 * 4 * 3)  # 2 parts of 3, 1
    parted = model.diagonal_fit_report(da.from_array(X, chunks=333))
    np.testing.assert_allclose(
        [c.full for c in parted.components], [c.full for c in whole.components], rtol=1e-10
    )
    assert parted.gain == pytest.approx(whole.gain, rel=1e-8)


def test_gridded_input_with_names_and_gaps(fitted):
    model, X = fitted
    grid = X.reshape(40, 100, 4).copy()
    grid[3, 7, 2] = np.nan
    cube = xr.DataArray(
        grid, dims=("y", "x", "band"), coords={"band": ["red", "nir", "swir1", "swir2"]}
    )
    named = DiagGMM(2, random_state=0).fit(cube.fillna(0.0).chunk({"y": 10}), feature_dim="band")
    with pytest.raises(ValueError, match="missing='error' refuses them"):
        named.diagonal_fit_report(cube.chunk({"y": 7}))
    report = named.set_params(missing="drop").diagonal_fit_report(cube.chunk({"y": 7}))
    assert report.n_rows_left_out == 1 and report.n_rows == 3999
    assert {report.components[0].correlations[0][0], report.components[0].correlations[0][1]} == {
        "red",
        "nir",
    }


def test_on_a_cluster_the_figures_are_the_same(fitted, local_cluster):
    from distributed import Client

    model, X = fitted
    local = model.diagonal_fit_report(da.from_array(X, chunks=500))
    with Client(local_cluster):
        remote = model.diagonal_fit_report(da.from_array(X, chunks=500))
    assert remote == local


def test_info_against_data_prints_the_check(fitted, tmp_path, capsys):
    model, X = fitted
    model.save(tmp_path / "model.zarr")
    zarr.create_array(str(tmp_path / "heldout.zarr"), data=X, chunks=(1000, 4))
    args = ["info", str(tmp_path / "model.zarr"), "--against", str(tmp_path / "heldout.zarr")]
    assert main([*args, "--threads"]) == 0
    text = capsys.readouterr().out
    assert "full covariances would fit better" in text and "x0~x1" in text
    assert main([*args, "--threads", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)["diagonal_check"]
    assert summary["diagonal_is_adequate"] is False
    assert summary["gain"] == pytest.approx(model.diagonal_fit_report(X).gain, rel=1e-12)


def test_rows_that_are_all_bad_are_refused(fitted):
    model, _ = fitted
    gaps = np.ones((10, 4))
    gaps[:, 1] = np.nan  # every row has an observed feature, but none has all of them
    marginalizing = copy.deepcopy(model).set_params(missing="marginalize")
    with pytest.raises(ValueError, match="No held-out row"):
        marginalizing.diagonal_fit_report(da.from_array(gaps, chunks=5))
