"""``diaggmm fit --labels`` / ``--bayesian``, and ``predict`` and ``info`` with those models.

Each CLI fit is compared with the library's own fit of the same stores: the saved model must
give bit-identical ``predict_proba``. The commands run in-process with ``--threads`` (dask's
threaded scheduler, no cluster), on real Zarr and Parquet stores under tmp_path.
"""

import json

import numpy as np
import pandas as pd
import pytest
import xarray as xr
import zarr
from scipy.special import logsumexp
from scipy.stats import norm

from diaggmm_dist import BayesianDiagGMM, DiagGMMClassifier
from diaggmm_dist.cli import main
from diaggmm_dist.persistence import load_any

pytestmark = pytest.mark.timeout(300)

N, CHUNK = 3000, 500


def run(argv, capsys):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def write_array(path, values, chunks):
    array = zarr.create_array(str(path), shape=values.shape, chunks=chunks, dtype=values.dtype)
    array[...] = values
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Three overlapping classes in 3-D: all labelled, a fifth labelled, and one NaN row."""
    folder = tmp_path_factory.mktemp("estimators")
    rng = np.random.default_rng(0)
    centers = np.array([[0.0, 0.0, 0.0], [2.5, 0.5, 0.0], [0.0, 2.5, 1.0]])
    y = rng.integers(0, 3, N)
    X = centers[y] + rng.normal(0, [1.0, 0.8, 1.2], (N, 3))
    partly = np.where(rng.random(N) < 0.2, y, -1)
    # non-contiguous classes: stored labels are codes into the classes attribute
    named = np.array([3, 7, 11])[y]
    table = pd.DataFrame({"a": X[:, 0], "b": X[:, 1], "c": X[:, 2], "label": partly})
    table.to_parquet(folder / "table.parquet", row_group_size=CHUNK)
    return dict(
        folder=folder,
        X=X,
        y=y,
        partly=partly,
        x_url=write_array(folder / "X.zarr", X, (CHUNK, 3)),
        y_url=write_array(folder / "y.zarr", named, (CHUNK,)),
        partly_url=write_array(folder / "partly.zarr", partly, (CHUNK,)),
        short_url=write_array(folder / "short.zarr", partly[:-1], (CHUNK,)),
        table=folder / "table.parquet",
    )


def fit_cli(argv, capsys):
    code, out, err = run(["fit", *argv, "--threads"], capsys)
    assert code == 0, err
    return out


def assert_same_proba(saved, library, X):
    assert type(saved) is type(library)
    np.testing.assert_array_equal(saved.predict_proba(X), library.predict_proba(X))
    np.testing.assert_array_equal(saved.predict(X), library.predict(X))


def test_all_labelled_is_naive_bayes_as_the_library_fits_it(data, tmp_path, capsys):
    out = fit_cli(
        [data["x_url"], "--labels", data["y_url"], "--var-smoothing", "1e-6", "--out",
         tmp_path / "nb.zarr"],
        capsys,
    )  # fmt: skip
    assert "3 classes [3, 7, 11], 3,000 labelled and 0 unlabelled rows" in out
    assert "1 iterations" in out and f"model saved to {tmp_path / 'nb.zarr'}" in out
    library = DiagGMMClassifier(var_smoothing=1e-6).fit(str(data["x_url"]), str(data["y_url"]))
    saved = load_any(tmp_path / "nb.zarr")
    assert_same_proba(saved, library, data["X"])
    assert saved.classes_.tolist() == [3, 7, 11] and saved.var_smoothing == 1e-6


def test_partly_labelled_is_semi_supervised_em_as_the_library_fits_it(data, tmp_path, capsys):
    out = fit_cli(
        [data["x_url"], "--labels", data["partly_url"], "--components-per-class", "2",
         "--tol", "1e-6", "--max-iter", "30", "--out", tmp_path / "em.zarr"],
        capsys,
    )  # fmt: skip
    labelled = int((data["partly"] != -1).sum())
    library = DiagGMMClassifier(2, tol=1e-6, max_iter=30).fit(
        str(data["x_url"]), str(data["partly_url"])
    )
    assert f"{labelled:,} labelled and {N - labelled:,} unlabelled rows" in out
    assert f"{library.n_iter_} iterations" in out and library.n_iter_ > 2
    assert out.count("lower bound") == library.n_iter_  # one line per EM iteration
    saved = load_any(tmp_path / "em.zarr")
    assert_same_proba(saved, library, data["X"])
    np.testing.assert_array_equal(saved.lower_bounds_, library.lower_bounds_)


def test_sample_weights_reach_both_estimators(data, tmp_path, capsys):
    weights = np.random.default_rng(3).uniform(0.5, 2.0, N)
    write_array(tmp_path / "w.zarr", weights, (CHUNK,))
    x, w = str(data["x_url"]), str(tmp_path / "w.zarr")
    fit_cli(
        [x, "--labels", data["partly_url"], "--sample-weight", w, "--out", tmp_path / "c.zarr"],
        capsys,
    )
    library = DiagGMMClassifier().fit(x, str(data["partly_url"]), sample_weight=weights)
    assert_same_proba(load_any(tmp_path / "c.zarr"), library, data["X"])
    fit_cli(
        [x, "--bayesian", "--k", "3", "--sample-weight", w, "--out", tmp_path / "b.zarr"], capsys
    )
    library = BayesianDiagGMM(n_components=3, random_state=0).fit(x, sample_weight=weights)
    assert_same_proba(load_any(tmp_path / "b.zarr"), library, data["X"])


def test_a_classifier_fits_on_a_cluster_as_the_library_on_threads(
    data, local_cluster, tmp_path, capsys
):
    argv = ["fit", data["x_url"], "--labels", data["partly_url"], "--out", tmp_path / "c.zarr"]
    code, out, err = run([*argv, "--scheduler", local_cluster.scheduler_address], capsys)
    assert code == 0, err
    assert f"scheduler {local_cluster.scheduler_address}" in out
    library = DiagGMMClassifier().fit(str(data["x_url"]), str(data["partly_url"]))
    assert_same_proba(load_any(tmp_path / "c.zarr"), library, data["X"])


def test_a_parquet_label_column_is_never_a_feature(data, tmp_path, capsys):
    fit_cli([data["table"], "--labels", "label", "--out", tmp_path / "t.zarr"], capsys)
    saved = load_any(tmp_path / "t.zarr")
    assert saved.feature_names_in_.tolist() == ["a", "b", "c"]
    library = DiagGMMClassifier().fit(str(data["table"]), "label", columns=["a", "b", "c"])
    assert_same_proba(saved, library, data["X"])
    # --columns given: the same fit; naming the label column there is refused
    fit_cli(
        [data["table"], "--labels", "label", "--columns", "a,b,c", "--out", tmp_path / "u.zarr"],
        capsys,
    )
    assert_same_proba(load_any(tmp_path / "u.zarr"), library, data["X"])
    code, _, err = run(
        ["fit", data["table"], "--labels", "label", "--columns", "a,label", "--out",
         tmp_path / "v.zarr", "--threads"],
        capsys,
    )  # fmt: skip
    assert code == 2 and "label column 'label' is also in --columns" in err
    code, _, err = run(
        ["fit", data["table"], "--labels", "nope", "--out", tmp_path / "v.zarr", "--threads"],
        capsys,
    )
    assert code == 2 and "names no column" in err and "['a', 'b', 'c', 'label']" in err


def test_bayesian_fit_is_the_library_fit(data, tmp_path, capsys):
    settings = ["--k", "6", "--seed", "2", "--max-iter", "200", "--tol", "1e-4"]
    prior = ["--weight-concentration-prior-type", "dirichlet_distribution"]
    more = ["--weight-concentration-prior", "0.01", "--weight-threshold", "0.02"]
    out = fit_cli(
        [data["x_url"], "--bayesian", *settings, *prior, *more, "--out", tmp_path / "b.zarr"],
        capsys,
    )
    library = BayesianDiagGMM(
        n_components=6,
        random_state=2,
        max_iter=200,
        tol=1e-4,
        weight_concentration_prior_type="dirichlet_distribution",
        weight_concentration_prior=0.01,
        weight_threshold=0.02,
    ).fit(str(data["x_url"]))
    assert 1 < library.effective_n_components_ < 6  # the prior left components empty
    assert f"K=6, {library.effective_n_components_} effective components (weight > 0.02)" in out
    saved = load_any(tmp_path / "b.zarr")
    assert_same_proba(saved, library, data["X"])
    np.testing.assert_array_equal(saved.weights_, library.weights_)
    assert saved.lower_bound_ == library.lower_bound_


def test_a_bayesian_fit_paused_in_its_checkpoint_is_continued_by_the_same_command(
    data, tmp_path, capsys
):
    common = [data["x_url"], "--bayesian", "--k", "4", "--seed", "1", "--tol", "0"]
    checkpoint = ["--checkpoint", tmp_path / "ck.zarr"]
    fit_cli([*common, "--max-iter", "3", *checkpoint, "--out", tmp_path / "p.zarr"], capsys)
    out = fit_cli([*common, "--max-iter", "6", *checkpoint, "--out", tmp_path / "b.zarr"], capsys)
    straight = BayesianDiagGMM(n_components=4, random_state=1, tol=0.0, max_iter=6)
    straight.fit(str(data["x_url"]))
    resumed = load_any(tmp_path / "b.zarr")
    assert resumed.n_iter_ == 6 and "6 iterations" in out
    np.testing.assert_array_equal(resumed.means_, straight.means_)
    assert resumed.lower_bound_ == straight.lower_bound_
    # a checkpoint of another K is refused before any work
    code, _, err = run(
        ["fit", *common[:3], "5", *common[4:], *checkpoint, "--out", tmp_path / "o.zarr"], capsys
    )
    assert code == 2 and "checkpoint" in err and not (tmp_path / "o.zarr").exists()


def test_a_classifier_paused_in_its_checkpoint_is_continued_by_the_same_command(
    data, tmp_path, capsys
):
    common = [data["x_url"], "--labels", data["partly_url"], "--components-per-class", "2"]
    common += ["--tol", "0"]
    checkpoint = ["--checkpoint", tmp_path / "ck.zarr"]
    fit_cli([*common, "--max-iter", "3", *checkpoint, "--out", tmp_path / "p.zarr"], capsys)
    assert load_any(tmp_path / "p.zarr").n_iter_ == 3
    out = fit_cli([*common, "--max-iter", "6", *checkpoint, "--out", tmp_path / "c.zarr"], capsys)
    straight = DiagGMMClassifier(2, tol=0.0, max_iter=6)
    straight.fit(str(data["x_url"]), str(data["partly_url"]))
    resumed = load_any(tmp_path / "c.zarr")
    assert resumed.n_iter_ == 6 and "6 iterations" in out
    assert out.count("lower bound") == 3  # only the iterations not in the checkpoint
    np.testing.assert_array_equal(resumed.means_, straight.means_)
    np.testing.assert_array_equal(resumed.covariances_, straight.covariances_)
    assert resumed.lower_bounds_ == straight.lower_bounds_
    # a checkpoint of other labels is refused before any work
    argv = [data["x_url"], "--labels", data["y_url"], *common[3:], *checkpoint]
    code, out, err = run(["fit", *argv, "--out", tmp_path / "o.zarr", "--threads"], capsys)
    assert code == 2 and "checkpoint" in err and not (tmp_path / "o.zarr").exists()


def test_predict_with_a_classifier_writes_class_codes_and_their_probability(data, tmp_path, capsys):
    fit_cli([data["x_url"], "--labels", data["y_url"], "--out", tmp_path / "m.zarr"], capsys)
    model = load_any(tmp_path / "m.zarr")
    X = data["X"].copy()
    X[7, 1] = np.nan
    write_array(tmp_path / "in.zarr", X, (CHUNK, 3))
    argv = ["predict", tmp_path / "m.zarr", tmp_path / "in.zarr", "--out", tmp_path / "s.zarr"]
    code, out, err = run([*argv, "--threads", "--missing", "drop"], capsys)
    assert code == 0, err
    group = zarr.open_group(str(tmp_path / "s.zarr"), mode="r")
    assert group.attrs["classes"] == [3, 7, 11] and group.attrs["estimator"] == "DiagGMMClassifier"
    labels, max_resp, log_lik = (group[n][...] for n in ("labels", "max_resp", "log_likelihood"))
    assert (labels.dtype, max_resp.dtype, log_lik.dtype) == (np.int16, np.float32, np.float64)
    assert group["labels"].attrs["flag_meanings"] == "unscored class_3 class_7 class_11"
    ok = np.ones(N, bool)
    ok[7] = False
    assert labels[7] == -1 and np.isnan(max_resp[7]) and np.isnan(log_lik[7])
    classes = np.array(group.attrs["classes"])
    np.testing.assert_array_equal(classes[labels[ok]], model.predict(X[ok]))
    np.testing.assert_array_equal(max_resp[ok], model.predict_proba(X[ok]).max(1).astype("f4"))
    # log p(x) from the stored mixture, computed independently
    each = norm.logpdf(X[ok][:, None, :], model.means_, np.sqrt(model.covariances_)).sum(-1)
    np.testing.assert_allclose(log_lik[ok], logsumexp(np.log(model.weights_) + each, 1))
    counts = np.bincount(labels[ok], minlength=3)
    assert "rows per class {3: %d, 7: %d, 11: %d}" % tuple(counts) in out


def test_string_classes_are_stored_as_codes_with_their_names(data, tmp_path, capsys):
    names = np.array(["sea", "land use", "ice"])[data["y"]]
    DiagGMMClassifier().fit(data["X"], names).save(tmp_path / "m.zarr")
    argv = ["predict", tmp_path / "m.zarr", data["x_url"], "--out", tmp_path / "s.zarr"]
    assert run([*argv, "--threads", "--quiet"], capsys)[0] == 0
    group = zarr.open_group(str(tmp_path / "s.zarr"), mode="r")
    assert group.attrs["classes"] == ["ice", "land use", "sea"]
    assert group["labels"].attrs["flag_meanings"] == "unscored class_ice class_land_use class_sea"
    stored = xr.open_zarr(str(tmp_path / "s.zarr"))
    predicted = np.array(stored.attrs["classes"])[stored["labels"].values]
    model = load_any(tmp_path / "m.zarr")
    np.testing.assert_array_equal(predicted, model.predict(data["X"]))


def test_predict_with_a_bayesian_mixture_writes_its_effective_components(tmp_path, capsys):
    rng = np.random.default_rng(0)  # two blobs: the docstring example's, 4 of 6 left empty
    X = np.vstack([rng.normal(0, 1, (500, 2)), rng.normal(8, 1, (500, 2))])
    X[3, 0] = np.nan
    write_array(tmp_path / "X.zarr", X, (250, 2))
    model = BayesianDiagGMM(n_components=6, random_state=0, weight_threshold=0.01, missing="drop")
    model.fit(X).save(tmp_path / "m.zarr")
    assert model.effective_n_components_ == 2
    argv = ["predict", tmp_path / "m.zarr", tmp_path / "X.zarr", "--out", tmp_path / "s.zarr"]
    code, out, err = run([*argv, "--threads"], capsys)
    assert code == 0, err
    group = zarr.open_group(str(tmp_path / "s.zarr"), mode="r")
    labels, max_resp, log_lik = (group[n][...] for n in ("labels", "max_resp", "log_likelihood"))
    predicted = model.predict(X)
    np.testing.assert_array_equal(labels, predicted)
    assert labels[3] == -1 and np.isnan(max_resp[3]) and np.isnan(log_lik[3])
    ok = labels != -1
    assert set(np.unique(labels[ok])) == set(np.flatnonzero(model.effective_components_))
    proba = model.predict_proba(X[ok])
    np.testing.assert_array_equal(max_resp[ok], proba[np.arange(ok.sum()), labels[ok]].astype("f4"))
    np.testing.assert_allclose(log_lik[ok], model.score_samples(X[ok]), rtol=1e-12)
    assert "1 unscored (NaN/inf)" in out


def test_a_classifier_label_map_keeps_the_cube_coordinates(tmp_path, capsys):
    rng = np.random.default_rng(1)
    truth = rng.integers(0, 2, (3, 8, 6))
    values = truth[..., None] * 3.0 + rng.normal(0, 1, (3, 8, 6, 2))
    cube = xr.DataArray(
        values, dims=("time", "y", "x", "band"), coords={"band": ["B1", "B2"], "y": np.arange(8)}
    )
    cube.chunk({"time": 1}).to_dataset(name="r").to_zarr(tmp_path / "cube.zarr")
    xr.DataArray(truth, dims=("time", "y", "x")).chunk({"time": 1}).to_dataset(
        name="labels"
    ).to_zarr(tmp_path / "labels.zarr")
    common = ["--feature-dim", "band", "--threads", "--quiet"]
    fit = ["fit", tmp_path / "cube.zarr", "--labels", tmp_path / "labels.zarr"]
    assert run([*fit, "--out", tmp_path / "m.zarr", *common], capsys)[0] == 0
    model = load_any(tmp_path / "m.zarr")
    argv = ["predict", tmp_path / "m.zarr", tmp_path / "cube.zarr", "--out", tmp_path / "map.zarr"]
    code, out, err = run([*argv, "--threads"], capsys)
    assert code == 0 and "(a label map)" in out, err
    result = xr.open_zarr(tmp_path / "map.zarr")
    assert result["labels"].dims == ("time", "y", "x") and result.attrs["classes"] == [0, 1]
    np.testing.assert_array_equal(result["y"], np.arange(8))
    expected = model.predict(values.reshape(-1, 2)).reshape(3, 8, 6)
    np.testing.assert_array_equal(result["labels"].values, expected)


def test_a_bayesian_label_map_is_its_predict_on_the_cube(tmp_path, capsys):
    rng = np.random.default_rng(2)
    values = np.concatenate([rng.normal(0, 1, (2, 8, 6, 2)), rng.normal(6, 1, (2, 8, 6, 2))])
    cube = xr.DataArray(values, dims=("time", "y", "x", "band"), coords={"band": ["B1", "B2"]})
    cube.chunk({"time": 1}).to_dataset(name="r").to_zarr(tmp_path / "cube.zarr")
    model = BayesianDiagGMM(n_components=4, random_state=0, weight_threshold=0.05)
    model.fit(str(tmp_path / "cube.zarr"), feature_dim="band").save(tmp_path / "m.zarr")
    argv = ["predict", tmp_path / "m.zarr", tmp_path / "cube.zarr", "--out", tmp_path / "map.zarr"]
    code, out, err = run([*argv, "--threads"], capsys)
    assert code == 0 and "(a label map)" in out, err
    result = xr.open_zarr(tmp_path / "map.zarr")
    assert result["labels"].dims == ("time", "y", "x")
    expected = model.predict(str(tmp_path / "cube.zarr"))
    np.testing.assert_array_equal(result["labels"].values, np.asarray(expected))
    assert set(np.unique(result["labels"])) <= set(np.flatnonzero(model.effective_components_))


def test_info_shows_each_estimator_and_refuses_the_diagonal_check_for_them(data, tmp_path, capsys):
    DiagGMMClassifier().fit(data["X"], data["partly"]).save(tmp_path / "c.zarr")
    BayesianDiagGMM(n_components=4, random_state=0).fit(data["X"]).save(tmp_path / "b.zarr")
    code, out, _ = run(["info", tmp_path / "c.zarr", "--json"], capsys)
    described = json.loads(out)
    assert code == 0 and described["estimator"] == "DiagGMMClassifier"
    assert described["classes"] == [0, 1, 2] and described["n_unlabelled"] == int(
        (data["partly"] == -1).sum()
    )
    assert sum(described["class_count"]) == (data["partly"] != -1).sum()
    code, out, _ = run(["info", tmp_path / "c.zarr"], capsys)
    assert code == 0 and "estimator         DiagGMMClassifier" in out and "classes" in out
    code, out, _ = run(["info", tmp_path / "b.zarr", "--json"], capsys)
    described = json.loads(out)
    model = load_any(tmp_path / "b.zarr")
    assert described["estimator"] == "BayesianDiagGMM"
    assert described["effective_n_components"] == model.effective_n_components_
    assert described["effective_components"] == np.flatnonzero(model.effective_components_).tolist()
    code, out, _ = run(["info", tmp_path / "b.zarr"], capsys)
    assert f"effective       {model.effective_n_components_} (weight > 0.001)" in out
    for name in ("b.zarr", "c.zarr"):
        argv = ["info", tmp_path / name, "--against", data["x_url"], "--threads"]
        code, _, err = run(argv, capsys)
        assert code == 2 and "--against checks a DiagGMM's diagonal assumption" in err


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--labels", "{partly}", "--k", "3"], "--k is not used with --labels"),
        (["--labels", "{partly}", "--init", "random"], "--init is not used with --labels"),
        (["--labels", "{partly}", "--seed", "3"], "--seed is not used with --labels"),
        (["--labels", "{partly}", "--weight-threshold", "0.1"], "--weight-threshold is a setting"),
        (["--labels", "{short}"], "--labels"),
        (["--k", "3", "--var-smoothing", "1"], "--var-smoothing is a setting of --labels"),
        (["--bayesian", "--k", "2,3"], "--bayesian takes one --k"),
        (["--bayesian"], "--k is required"),
        (["--bayesian", "--k", "3", "--missing", "marginalize"], "marginalize"),
        ([], "--k is required"),
    ],
)
def test_wrong_estimator_options_are_refused_before_any_work(
    data, tmp_path, capsys, extra, message
):
    extra = [
        a.format(partly=data["partly_url"], short=data["short_url"], tmp=tmp_path) for a in extra
    ]
    argv = ["fit", data["x_url"], *extra, "--out", tmp_path / "m.zarr", "--threads"]
    code, out, err = run(argv, capsys)
    assert code == 2 and message in err and "\n" not in err.strip(), err
    assert not (tmp_path / "m.zarr").exists() and not (tmp_path / "ck").exists()
    assert "fit:" not in out  # refused before the first line of work


def test_the_prior_choices_are_the_librarys():
    from diaggmm_dist.bayesian_mstep import PRIOR_TYPES
    from diaggmm_dist.cli import estimator_options

    assert estimator_options.PRIOR_TYPES == tuple(PRIOR_TYPES)
