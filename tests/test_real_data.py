"""Real gridded data with real gaps: the COADS surface-marine climatology (Debian
ferret-datasets).
"""

from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from diaggmm_dist import DiagGMM
from diaggmm_dist.outputs.label_maps import write_label_map

COADS = Path("/usr/share/ferret-vis/data/coads_climatology.cdf")
VARIABLES = ["SST", "AIRT", "SPEH", "WSPD", "UWND", "VWND", "SLP"]

pytestmark = pytest.mark.skipif(
    not COADS.exists(),
    reason="COADS climatology missing: `make test` installs it (apt-get install ferret-datasets)",
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
    assert labels.dims == ("TIME", "COADSY", "COADSX") and labels.dtype == np.int64
    xr.testing.assert_equal(labels.COADSX, coads.COADSX)
    values = labels.values
    all_missing = coads[VARIABLES].to_dataarray("v").isnull().all("v").values
    some_missing = coads[VARIABLES].to_dataarray("v").isnull().any("v").values & ~all_missing
    assert some_missing.sum() > 1000  # real partial gaps are in play
    np.testing.assert_array_equal(
        values == -1, all_missing
    )  # -1 only where every variable is missing
    assert set(np.unique(values[~all_missing])) <= set(range(6))
    write_label_map(gmm, coads[VARIABLES], tmp_path / "coads_labels.zarr")
    back = xr.open_zarr(tmp_path / "coads_labels.zarr", decode_times=False)
    np.testing.assert_array_equal(back.labels.values, values)
    xr.testing.assert_equal(back.COADSY, coads.COADSY)


def test_on_the_pixels_without_gaps_every_policy_gives_the_same_model(coads):
    rows = (
        coads[VARIABLES]
        .to_dataarray("v")
        .transpose("TIME", "COADSY", "COADSX", "v")
        .values.reshape(-1, 7)
    )
    complete = rows[~np.isnan(rows).any(axis=1)].astype(np.float64)
    assert complete.shape[0] > 10000
    fits = [
        DiagGMM(5, random_state=1, tol=0, max_iter=20, missing=policy).fit(complete)
        for policy in ("error", "drop", "marginalize")
    ]
    for other in fits[1:]:
        np.testing.assert_array_equal(other.means_, fits[0].means_)
        np.testing.assert_array_equal(other.covariances_, fits[0].covariances_)
        assert other.lower_bounds_ == fits[0].lower_bounds_


def test_turbidity_subset_conversion_fit_and_maps(tmp_path):
    pytest.importorskip("pvlib", reason="the demo extra (pvlib) is installed by `make test`")
    import zarr

    from diaggmm_dist.datasets.linke import convert_linke_turbidity, linke_source_path
    from diaggmm_dist.plots import plot_convergence, plot_label_map

    url = tmp_path / "linke.zarr"
    convert_linke_turbidity(
        url, lat_slice=slice(600, 870), lon_slice=slice(2000, 2540)
    )  # Europe/Africa, 1/12°
    data = xr.open_zarr(url, consolidated=False)
    assert data.turbidity.dims == ("lat", "lon", "month") and data.turbidity.dtype == np.uint8
    import h5py

    with h5py.File(linke_source_path(), "r") as source:
        np.testing.assert_array_equal(
            data.turbidity.values, source["LinkeTurbidity"][600:870, 2000:2540]
        )
    assert data.lat.values[0] == pytest.approx(90 - 600.5 / 12)
    gmm = DiagGMM(5, dtype="float32", random_state=0, tol=1e-4).fit(
        data.turbidity, feature_dim="month"
    )
    assert gmm.converged_ and np.all(np.diff(gmm.lower_bounds_) > -1e-6)
    write_label_map(gmm, data.turbidity, tmp_path / "labels.zarr")
    labels = xr.open_zarr(tmp_path / "labels.zarr", consolidated=False).labels
    assert labels.dims == ("lat", "lon") and set(np.unique(labels.values)) <= set(range(5))
    assert zarr.open_group(str(tmp_path / "labels.zarr"))["labels"].chunks == (270, 540)
    for png in (
        plot_label_map(labels, tmp_path / "map.png"),
        plot_convergence(gmm.lower_bounds_, tmp_path / "ll.png"),
    ):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
