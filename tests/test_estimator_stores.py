"""The model stores of ``BayesianDiagGMM`` and ``DiagGMMClassifier``, and ``load_any``.

A saved and loaded model is the saved one to the bit (every fitted attribute, every setting,
its predictions, scikit-learn's model from it, ``partial_fit`` continuing); a store changed by
hand is refused naming the file and the field; a store of another estimator is refused naming
the class that loads it, and ``load_any`` loads whichever the store holds.
"""

import json
import warnings

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from conftest import mixture_data
from s3_harness import s3, s3_service  # noqa: F401
from sklearn.exceptions import NotFittedError
from sklearn.naive_bayes import GaussianNB
from test_model_store_tampering import DELETE, attr, edit_json, on_chunk, write_bytes
from zarr.storage import MemoryStore

from diaggmm_dist import BayesianDiagGMM, DiagGMM, DiagGMMClassifier
from diaggmm_dist.persistence import load_any
from diaggmm_dist.stores.model_checks import ModelStoreError

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


@pytest.fixture(scope="module")
def data():
    X, _ = mixture_data(600, 3, 2, seed=3)
    return X + 20.0


@pytest.fixture(scope="module")
def labels(data):
    return (data[:, 0] > np.median(data[:, 0])).astype(np.int64) * 5 + 2  # classes 2 and 7


@pytest.fixture(scope="module")
def bayesian(data):
    table = pd.DataFrame(data, columns=["a", "b", "c"])
    return {
        "process": BayesianDiagGMM(n_components=4, random_state=0).fit(data),
        "distribution": BayesianDiagGMM(
            n_components=3,
            weight_concentration_prior_type="dirichlet_distribution",
            mean_prior=[20.0, 20.0, 20.0],
            covariance_prior=2.0,
            random_state=1,
            max_iter=5,
            tol=0,
        ).fit(table),
    }


@pytest.fixture(scope="module")
def classifiers(data, labels):
    partly = labels.copy()
    partly[::3] = -1
    names = np.array(["cat", "dog"])[(labels == 7).astype(int)]
    return {
        "naive_bayes": DiagGMMClassifier().fit(data, labels),
        "semi_supervised": DiagGMMClassifier(2, max_iter=5).fit(data, partly),
        "strings": DiagGMMClassifier(priors=[0.25, 0.75]).fit(
            pd.DataFrame(data, columns=["a", "b", "c"]), names
        ),
        "booleans": DiagGMMClassifier(var_smoothing=0.1).fit(data, labels == 7),
        "floats": DiagGMMClassifier().fit(data, labels.astype(np.float32)),
    }


def _same(got, want, name):
    if isinstance(want, tuple):
        assert isinstance(got, tuple) and len(got) == len(want), name
        for g, w in zip(got, want):
            _same(g, w, name)
    elif isinstance(want, np.ndarray):
        assert got.dtype == want.dtype and got.shape == want.shape, name
        np.testing.assert_array_equal(got, want, err_msg=name)
    else:
        assert type(got) is type(want) or float(got) == float(want), name
        assert got == want, name


def assert_identical(loaded, saved):
    """Every fitted attribute to the bit, every setting (arrays given as lists compare as such)."""
    got, want = loaded.get_params(), saved.get_params()
    assert set(got) == set(want)
    for name, value in want.items():
        if isinstance(value, (list, np.ndarray)):
            np.testing.assert_array_equal(np.asarray(got[name]), np.asarray(value), err_msg=name)
        else:
            assert got[name] == value, name
    fitted = sorted(n for n in vars(saved) if n.endswith("_") and not n.startswith("_"))
    assert sorted(n for n in vars(loaded) if n.endswith("_") and not n.startswith("_")) == fitted
    for name in fitted:
        _same(getattr(loaded, name), getattr(saved, name), name)


# ------------------------------------------------------------------ round trips
@pytest.mark.parametrize("kind", ["process", "distribution"])
def test_a_loaded_bayesian_model_is_the_saved_one_to_the_bit(bayesian, data, kind, tmp_path):
    saved = bayesian[kind]
    saved.save(tmp_path / "m.zarr")
    loaded = BayesianDiagGMM.load(tmp_path / "m.zarr")
    assert_identical(loaded, saved)
    X = pd.DataFrame(data, columns=["a", "b", "c"]) if kind == "distribution" else data
    for method in ("predict", "predict_proba", "score_samples"):
        np.testing.assert_array_equal(getattr(loaded, method)(X), getattr(saved, method)(X))
    np.testing.assert_array_equal(
        loaded.to_sklearn().predict_proba(data), saved.to_sklearn().predict_proba(data)
    )
    assert loaded.score(X) == saved.score(X)


@pytest.mark.parametrize(
    "kind", ["naive_bayes", "semi_supervised", "strings", "booleans", "floats"]
)
def test_a_loaded_classifier_is_the_saved_one_to_the_bit(classifiers, data, kind, tmp_path):
    saved = classifiers[kind]
    saved.save(tmp_path / "m.zarr")
    loaded = DiagGMMClassifier.load(tmp_path / "m.zarr")
    assert_identical(loaded, saved)
    X = pd.DataFrame(data, columns=["a", "b", "c"]) if kind == "strings" else data
    for method in ("predict", "predict_proba", "predict_log_proba"):
        got, want = getattr(loaded, method)(X), getattr(saved, method)(X)
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)


def test_partial_fit_continues_a_loaded_naive_bayes_model_as_gaussian_nb(data, labels, tmp_path):
    first, second = slice(0, 400), slice(400, None)
    saved = DiagGMMClassifier().partial_fit(data[first], labels[first], classes=[2, 7])
    saved.save(tmp_path / "m.zarr")
    loaded = DiagGMMClassifier.load(tmp_path / "m.zarr")
    assert not hasattr(loaded, "n_unlabelled_")  # (partial_fit alone does not count them)
    loaded.partial_fit(data[second], labels[second])
    saved.partial_fit(data[second], labels[second])
    assert_identical(loaded, saved)  # as if it had never been saved
    nb = GaussianNB().partial_fit(data[first], labels[first], classes=[2, 7])
    nb.partial_fit(data[second], labels[second])
    np.testing.assert_allclose(loaded.theta_, nb.theta_, rtol=1e-12)
    np.testing.assert_allclose(loaded.var_, nb.var_, rtol=1e-12)
    np.testing.assert_allclose(loaded.class_prior_, nb.class_prior_, rtol=1e-12)
    np.testing.assert_allclose(loaded.predict_proba(data), nb.predict_proba(data), rtol=1e-9)


def test_stores_open_in_xarray_without_warnings(bayesian, classifiers, tmp_path):
    bayesian["distribution"].save(tmp_path / "b.zarr")
    classifiers["strings"].save(tmp_path / "c.zarr")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        b = xr.open_zarr(tmp_path / "b.zarr")
        c = xr.open_zarr(tmp_path / "c.zarr")
    assert b["feature"].values.tolist() == ["a", "b", "c"] == c["feature"].values.tolist()
    assert b["means"].dims == ("component", "feature") and b["mean_prior"].dims == ("feature",)
    assert c["class_count"].dims == ("class",) and c.attrs["classes"] == ["cat", "dog"]
    np.testing.assert_array_equal(
        b["weight_concentration"], bayesian["distribution"].weight_concentration_
    )


def test_save_refuses_an_existing_store_and_an_unfitted_model(bayesian, classifiers, tmp_path):
    bayesian["process"].save(tmp_path / "m.zarr")
    with pytest.raises(FileExistsError):
        classifiers["naive_bayes"].save(tmp_path / "m.zarr")
    classifiers["naive_bayes"].save(tmp_path / "m.zarr", overwrite=True)
    assert isinstance(load_any(tmp_path / "m.zarr"), DiagGMMClassifier)
    for unfitted in (BayesianDiagGMM(), DiagGMMClassifier()):
        with pytest.raises(NotFittedError):
            unfitted.save(tmp_path / "n.zarr")
    assert not (tmp_path / "n.zarr").exists()


def test_stores_round_trip_through_a_zarr_store_object(bayesian, classifiers):
    for model in (bayesian["process"], classifiers["semi_supervised"]):
        memory = MemoryStore()
        model.save(memory)
        assert_identical(load_any(memory), model)


@pytest.mark.parametrize("settings", [{"max_iter": 0}, {"dtype": "float32", "missing": "drop"}])
def test_unfitted_iterations_and_float32_round_trip(data, settings, tmp_path):
    saved = BayesianDiagGMM(n_components=3, random_state=0, **settings).fit(data)
    saved.save(tmp_path / "m.zarr")
    loaded = BayesianDiagGMM.load(tmp_path / "m.zarr")
    assert_identical(loaded, saved)
    np.testing.assert_array_equal(loaded.predict_proba(data), saved.predict_proba(data))
    assert loaded.lower_bound_ == saved.lower_bound_  # -inf with max_iter=0


def test_a_constant_feature_gives_a_zero_prior_variance_that_saves_and_loads(data, tmp_path):
    # scikit-learn's default covariance prior is the data's variance: 0 for a constant feature
    # (the digits' blank border pixels); a fit must not write a store its own load refuses
    constant = np.column_stack([data, np.zeros(len(data))])
    saved = BayesianDiagGMM(n_components=3, random_state=0, max_iter=5).fit(constant)
    assert saved.covariance_prior_[-1] == 0.0
    saved.save(tmp_path / "m.zarr")
    loaded = BayesianDiagGMM.load(tmp_path / "m.zarr")
    assert_identical(loaded, saved)
    np.testing.assert_array_equal(loaded.predict_proba(constant), saved.predict_proba(constant))


def test_gridded_models_predict_the_same_maps(tmp_path):
    rng = np.random.default_rng(1)
    cube = xr.DataArray(rng.normal(size=(4, 5, 3)), dims=("y", "x", "band"))
    cube = cube.assign_coords(band=["r", "g", "b"])
    labels = xr.DataArray((cube.isel(band=0) > 0).astype(int).values, dims=("y", "x"))
    for model in (
        BayesianDiagGMM(n_components=2, random_state=0).fit(cube, feature_dim="band"),
        DiagGMMClassifier().fit(cube, labels, feature_dim="band"),
    ):
        model.save(tmp_path / "m.zarr", overwrite=True)
        loaded = load_any(tmp_path / "m.zarr")
        assert loaded.input_layout_ == model.input_layout_
        xr.testing.assert_identical(loaded.predict(cube), model.predict(cube))
        xr.testing.assert_identical(loaded.predict_proba(cube), model.predict_proba(cube))


def test_a_model_from_scikit_learn_round_trips(data, tmp_path):
    from sklearn.mixture import BayesianGaussianMixture

    bgm = BayesianGaussianMixture(n_components=3, covariance_type="diag", random_state=0)
    saved = BayesianDiagGMM.from_sklearn(bgm.fit(data), weight_threshold=0.01)
    saved.save(tmp_path / "m.zarr")
    loaded = BayesianDiagGMM.load(tmp_path / "m.zarr")
    assert_identical(loaded, saved)
    np.testing.assert_array_equal(loaded.predict(data), saved.predict(data))


def test_stores_round_trip_on_object_storage_with_storage_options(s3, bayesian, classifiers, data):
    for name, model in (("vb.zarr", bayesian["process"]), ("clf.zarr", classifiers["strings"])):
        model.save(s3.url(name), storage_options=s3.storage_options)
        with pytest.raises(FileExistsError):
            model.save(s3.url(name), storage_options=s3.storage_options)
        model.save(s3.url(name), storage_options=s3.storage_options, overwrite=True)
        loaded = type(model).load(s3.url(name), storage_options=s3.storage_options)
        assert_identical(loaded, model)
        assert_identical(load_any(s3.url(name), storage_options=s3.storage_options), model)
    with pytest.raises(ModelStoreError, match="holds a BayesianDiagGMM"):
        DiagGMMClassifier.load(s3.url("vb.zarr"), storage_options=s3.storage_options)


# ------------------------------------------------------------------ dispatch
def test_load_any_gives_the_estimator_the_store_holds(bayesian, classifiers, data, tmp_path):
    gmm = DiagGMM(2, random_state=0).fit(data)
    models = {"gmm": gmm, "vb": bayesian["process"], "clf": classifiers["naive_bayes"]}
    for name, model in models.items():
        model.save(tmp_path / name)
        loaded = load_any(str(tmp_path / name))
        assert type(loaded) is type(model)
        np.testing.assert_array_equal(loaded.predict(data), model.predict(data))
    cases = [
        (DiagGMM, "vb", "holds a BayesianDiagGMM, not a DiagGMM", "BayesianDiagGMM.load"),
        (DiagGMM, "clf", "holds a DiagGMMClassifier", "DiagGMMClassifier.load"),
        (BayesianDiagGMM, "gmm", "holds a DiagGMM, not a BayesianDiagGMM", "DiagGMM.load"),
        (DiagGMMClassifier, "vb", "holds a BayesianDiagGMM", "BayesianDiagGMM.load"),
        (BayesianDiagGMM, "clf", "holds a DiagGMMClassifier", "DiagGMMClassifier.load"),
    ]
    for cls, name, holds, use in cases:
        with pytest.raises(ModelStoreError) as caught:
            cls.load(tmp_path / name)
        assert (
            holds in str(caught.value)
            and use in str(caught.value)
            and "load_any" in str(caught.value)
        )


def test_the_registry_keeps_any_estimator_and_load_any_reads_it(bayesian, classifiers, tmp_path):
    from diaggmm_dist.stores.registry import ModelRegistry

    registry = ModelRegistry(tmp_path / "registry")
    first = registry.promote(bayesian["process"])
    registry.promote(classifiers["naive_bayes"])
    version, current = registry.current(load_any)
    assert version != first and isinstance(current, DiagGMMClassifier)
    assert_identical(registry.load(first, BayesianDiagGMM.load), bayesian["process"])


def test_load_any_refuses_what_is_not_a_model(data, tmp_path):
    DiagGMM(2, random_state=0, max_iter=2).fit(data, checkpoint=tmp_path / "ckpt.zarr")
    with pytest.raises(ModelStoreError, match="is not a diaggmm-dist model"):
        load_any(tmp_path / "ckpt.zarr")
    with pytest.raises(FileNotFoundError, match="No model found"):
        load_any(tmp_path / "nothing.zarr")
    with pytest.raises(TypeError):
        load_any(tmp_path / "nothing.zarr", storage_options=["not", "a", "dict"])


# ------------------------------------------------------------------ tampering
def _negative(chunk, _):
    values = np.frombuffer(chunk.read_bytes(), dtype="<f8").copy()
    values[0] = -abs(values[0]) - 1.0
    chunk.write_bytes(values.tobytes())


def _nan(chunk, _):
    values = np.frombuffer(chunk.read_bytes(), dtype="<f8").copy()
    values[-1] = np.nan
    chunk.write_bytes(values.tobytes())


def _flip(chunk, _):
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0x04
    chunk.write_bytes(bytes(data))


def _shape(meta):
    meta["shape"] = [meta["shape"][0] + 1, *meta["shape"][1:]]


BAYESIAN_TAMPERINGS = {
    "flipped bit": (on_chunk("means", _flip), "array 'means' does not match its checksum"),
    "negative concentration": (
        on_chunk("weight_concentration_a", _negative),
        "array 'weight_concentration_a' has 1 value(s) <= 0",
    ),
    "negative precision": (on_chunk("mean_precision", _negative), "'mean_precision'"),
    "negative dof": (on_chunk("degrees_of_freedom", _negative), "'degrees_of_freedom'"),
    "NaN": (on_chunk("covariances", _nan), "array 'covariances' holds NaN"),
    "shape": (edit_json("means/zarr.json", _shape), "means/zarr.json (array 'means'): 'shape'"),
    "lost chunk": (
        on_chunk("covariance_prior", lambda chunk, _: chunk.unlink()),
        "'covariance_prior' has lost its chunk",
    ),
    "truncated": (
        on_chunk("mean_prior", lambda chunk, _: chunk.write_bytes(chunk.read_bytes()[:-8])),
        "'mean_prior' holds 16 bytes, expected 24",
    ),
    "lower bound": (attr("lower_bound", -1.0), "do not match their checksum"),
    "setting": (attr("params.tol", -1.0), "attribute 'params': a setting is invalid"),
    "unknown setting": (attr("params.evil", 1), "attribute 'params' must map exactly"),
    "verbose": (attr("params.verbose", "loud"), "'params': verbose must be an integer >= 0"),
    "random_state": (attr("params.random_state", -1), "random_state must be null or an"),
    "huge": (attr("params.max_iter", 10**400), "max_iter is a number beyond float64"),
    "marginalize": (attr("params.missing", "marginalize"), "is not available for the var"),
    "prior type": (
        attr("weight_concentration_prior_type", "dirichlet_distribution"),
        "array 'weight_concentration' is missing",
    ),
    "bad prior type": (attr("weight_concentration_prior_type", "pitman_yor"), "prior_type"),
    "dof prior": (attr("priors.degrees_of_freedom", 1.0), "degrees_of_freedom must be > n_f"),
    "priors": (attr("priors", {"weight_concentration": 1.0}), "attribute 'priors' must map"),
    "n_components": (attr("n_components", 5), "'shape' must be [5]"),
    "no checksums": (attr("checksums", DELETE), "attribute 'checksums' is missing"),
    "version": (attr("format_version", 2), "attribute 'format_version' is 2"),
    "format": (attr("format", "sklearn-pickle"), "is not a diaggmm-dist model"),
    "zarr.json": (write_bytes("zarr.json", b"{not json"), "zarr.json is not valid JSON"),
}


@pytest.mark.parametrize("case", sorted(BAYESIAN_TAMPERINGS))
def test_a_tampered_bayesian_store_is_refused_naming_the_field(bayesian, tmp_path, case):
    tamper, field = BAYESIAN_TAMPERINGS[case]
    path = tmp_path / "model.zarr"
    bayesian["process"].save(path)
    tamper(path)
    with pytest.raises(ModelStoreError) as caught:
        BayesianDiagGMM.load(path)
    message = str(caught.value)
    assert field in message and str(path) in message, message
    assert len(message) < 600 and "\n" not in message


CLASSIFIER_TAMPERINGS = {
    "flipped bit": (on_chunk("class_count", _flip), "array 'class_count' does not match"),
    "negative weight": (on_chunk("weights", _negative), "array 'weights' has negative values"),
    "negative variance": (on_chunk("covariances", _negative), "'covariances' has negative"),
    "NaN": (on_chunk("means", _nan), "array 'means' holds NaN"),
    "shape": (edit_json("weights/zarr.json", _shape), "weights/zarr.json (array 'weights')"),
    "classes": (attr("classes", ["cat", "cat"]), "must be distinct and sorted"),
    "unsorted": (attr("classes", ["dog", "cat"]), "must be distinct and sorted"),
    "class type": (attr("classes", [1, 2]), "attribute 'classes' must be n_classes (2) labels"),
    "unlabelled class": (
        [attr("classes", [-1, 3]), attr("classes_dtype", "<i8")],
        "include -1",
    ),
    "dtype": (attr("classes_dtype", "<M8[ns]"), "attribute 'classes_dtype' must"),
    "n_classes": (attr("n_classes", 3), "'params': a setting is invalid: Number of priors"),
    "n_components": (attr("n_components", 3), "'n_components' is 3, not n_classes (2) times"),
    "per class": (attr("params.n_components_per_class", 0), "n_components_per_class must be"),
    "priors": (attr("params.priors", [0.5, 0.6]), "The sum of the priors should be 1"),
    "verbose": (attr("params.verbose", True), "'params': verbose must be an integer >= 0"),
    "epsilon": (attr("epsilon", -1.0), "attribute 'epsilon' must be a finite number >= 0"),
    "n_unlabelled": (attr("n_unlabelled", 3), "do not match their checksum"),
    "no feature coordinate": (
        lambda path: __import__("shutil").rmtree(path / "feature"),
        "the feature coordinate 'feature' is missing",
    ),
}


@pytest.mark.parametrize("case", sorted(CLASSIFIER_TAMPERINGS))
def test_a_tampered_classifier_store_is_refused_naming_the_field(classifiers, tmp_path, case):
    tampers, field = CLASSIFIER_TAMPERINGS[case]
    path = tmp_path / "model.zarr"
    classifiers["strings"].save(path)
    for tamper in tampers if isinstance(tampers, list) else [tampers]:
        tamper(path)
    with pytest.raises(ModelStoreError) as caught:
        DiagGMMClassifier.load(path)
    message = str(caught.value)
    assert field in message and str(path) in message, message
    assert len(message) < 600 and "\n" not in message


def test_the_checksums_cover_every_attribute_written(bayesian, classifiers, tmp_path):
    """Control: each attribute the library writes, changed alone, is refused."""
    from diaggmm_dist.stores.bayesian_store import BAYESIAN_ATTRIBUTES
    from diaggmm_dist.stores.classifier_store import CLASSIFIER_ATTRIBUTES

    for model, names in (
        (bayesian["process"], BAYESIAN_ATTRIBUTES),
        (classifiers["strings"], CLASSIFIER_ATTRIBUTES),
    ):
        model.save(tmp_path / "m.zarr", overwrite=True)
        attrs = json.loads((tmp_path / "m.zarr" / "zarr.json").read_text())["attributes"]
        assert set(attrs) == {*names, "checksums"}
