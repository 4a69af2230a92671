"""Real gridded data with real gaps: the COADS surface-marine climatology (Debian ferret-datasets)."""

from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from diaggmm_dist import DiagGMM
from diaggmm_dist.io.label_maps import write_label_map

COADS = Path("/usr/share/ferret-vis/data/coads_climatology.cdf")
VARIABLES = ["SST", "AIRT", "SPEH", "WSPD", "UWND", "VWND", "SLP"]

pytestmark = pytest.mark.skipif(
    not COADS.exists(), reason="COADS climatology missing: `make test` installs it (apt-get install ferret-datasets)"
)


@pytest.fixture(scope="module")
def coads():
    # TIME is 'hours since 0000-01-01' (a climatology): keep it numeric rather than needing cftime.
    with xr.open_dataset(COADS, decode_times=False, chunks={"TIME": 3}) as ds:
        yield ds


def test_marginalized_fit_over_real_gaps_gives_a_label_map_on_the_grid(coads, tmp_path):
    gmm = DiagGMM(6, missing="marginalize", random_state=0, tol=1e-4).fit(coads, features=VARIABLES)
    assert gmm.converged_ and list(gmm.feature_names_in_) == VARIABLES
    labels = gmm.predict(coads)
    assert labels.dims == ("TIME", "COADSY", "COADSX") and labels.dtype == np.int16
    xr.testing.assert_equal(labels.COADSX, coads.COADSX)
    values = labels.values
    all_missing = coads[VARIABLES].to_dataarray("v").isnull().all("v").values
    some_missing = coads[VARIABLES].to_dataarray("v").isnull().any("v").values & ~all_missing
    assert some_missing.sum() > 1000  # real partial gaps are in play
    np.testing.assert_array_equal(values == -1, all_missing)  # -1 only where every variable is missing
    assert set(np.unique(values[~all_missing])) <= set(range(6))
    write_label_map(gmm, coads[VARIABLES], tmp_path / "coads_labels.zarr")
    back = xr.open_zarr(tmp_path / "coads_labels.zarr", decode_times=False)
    np.testing.assert_array_equal(back.labels.values, values)
    xr.testing.assert_equal(back.COADSY, coads.COADSY)


def test_on_the_pixels_without_gaps_every_policy_gives_the_same_model(coads):
    rows = coads[VARIABLES].to_dataarray("v").transpose("TIME", "COADSY", "COADSX", "v").values.reshape(-1, 7)
    complete = rows[~np.isnan(rows).any(axis=1)].astype(np.float64)
    assert complete.shape[0] > 10000
    fits = [DiagGMM(5, random_state=1, tol=0, max_iter=20, missing=policy).fit(complete)
            for policy in ("error", "drop", "marginalize")]
    for other in fits[1:]:
        np.testing.assert_array_equal(other.means_, fits[0].means_)
        np.testing.assert_array_equal(other.covariances_, fits[0].covariances_)
        assert other.lower_bounds_ == fits[0].lower_bounds_
