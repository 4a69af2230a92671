"""The input layout: fitted once by fit, every later input read once with it."""

import dask.array as da
import numpy as np
import pandas as pd
import pytest
import xarray as xr

from diaggmm_dist import DiagGMM, inputs
from diaggmm_dist.inputs import InputLayout, layout
from diaggmm_dist.outputs.label_maps import label_map


@pytest.fixture(scope="module")
def grid():
    rng = np.random.default_rng(5)
    values = np.concatenate([rng.normal(0, 1, (6, 10, 3)), rng.normal(4, 1, (6, 10, 3))])
    return xr.DataArray(
        da.from_array(values, chunks=(4, 5, 3)),
        dims=("y", "x", "band"),
        coords={"y": np.arange(12), "x": np.arange(10), "band": ["red", "green", "nir"]},
    )


@pytest.fixture(scope="module")
def model(grid):
    return DiagGMM(2, random_state=0, max_iter=5).fit(grid, feature_dim="band")


@pytest.fixture
def conversions(monkeypatch):
    """Count every conversion of user input into Samples."""
    calls, real = [], layout.as_samples

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(layout, "as_samples", counting)
    return calls


def test_the_persisted_form_is_the_three_options():
    fitted = InputLayout("band", None, None, 3, ("a", "b", "c"), ("y", "x"))
    assert fitted.to_dict() == {"feature_dim": "band", "features": None, "columns": None}
    assert InputLayout.from_dict(fitted.to_dict()) == InputLayout("band")
    assert InputLayout.from_dict(None) == InputLayout.from_dict({}) == InputLayout()


def test_fit_keeps_the_layout_and_what_it_saw(model, grid):
    assert model.input_layout_ == {"feature_dim": "band", "features": None, "columns": None}
    fitted = InputLayout.of(model)
    assert fitted.feature_dim == "band" and fitted.n_features == 3
    assert fitted.feature_names == ("red", "green", "nir")
    samples = fitted.samples(grid, model.chunk_size)
    assert fitted.fitted(samples).sample_dims == ("y", "x")
    assert fitted.samples(samples) is samples  # Samples are taken as they are


@pytest.mark.parametrize("method", ["predict", "score", "score_samples", "bic", "aic"])
def test_every_method_reads_its_input_once(model, grid, conversions, method):
    getattr(model, method)(grid)
    assert len(conversions) == 1


def test_a_label_map_with_probabilities_reads_its_input_once(model, grid, conversions):
    result = label_map(model, grid, probabilities=True)
    assert set(result.data_vars) == {"labels", "max_resp", "log_likelihood", "responsibility"}
    assert len(conversions) == 1


def test_bic_and_aic_count_the_samples_of_every_sample_dim(model, grid):
    flat = grid.values.reshape(-1, 3)
    assert model.bic(grid) == pytest.approx(model.bic(flat), rel=1e-12)
    assert model.aic(grid) == pytest.approx(model.aic(flat), rel=1e-12)


def test_other_features_are_refused_by_the_layout():
    table = pd.DataFrame(np.random.default_rng(0).standard_normal((50, 2)), columns=["a", "b"])
    fitted = InputLayout.of(DiagGMM(2, random_state=0, max_iter=3).fit(table))
    assert fitted.feature_names == ("a", "b")
    with pytest.raises(ValueError, match="The features differ from those seen in fit"):
        fitted.check(inputs.as_samples(table.rename(columns={"b": "c"})), "DiagGMM")
    with pytest.raises(ValueError, match="X has 1 features, but DiagGMM is expecting 2"):
        fitted.check(inputs.as_samples(table[["a"]].to_numpy()), "DiagGMM")
