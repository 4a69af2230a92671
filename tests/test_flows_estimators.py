"""The ``train`` flow's other estimators: ``labels_url`` (a classifier), ``estimator="bayesian"``.

The flows run on the session's real Prefect server (tests/prefect_harness.py) and do their
data passes on a real distributed LocalCluster; the saved model must be the library's own
fit of the same stores (bit-identical ``predict_proba``).
"""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pytest
import zarr
from prefect_harness import (
    REPO,
    prefect_api,  # noqa: F401
    prefect_server,  # noqa: F401
    task_runs,
    wait_for,
)

from diaggmm_dist import BayesianDiagGMM, DiagGMMClassifier
from diaggmm_dist.persistence import load_any

if str(REPO) not in sys.path:  # `flows` is a package at the repository root
    sys.path.insert(0, str(REPO))

pytestmark = pytest.mark.timeout(300)

N = 4000
FIT = dict(tol=1e-6, max_iter=40, dtype="float64")


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """Three overlapping classes in 3-D, a quarter of the rows labelled; Zarr and Parquet."""
    root = tmp_path_factory.mktemp("flow-estimators")
    rng = np.random.default_rng(5)
    centers = np.array([[0.0, 0.0, 0.0], [2.5, 0.5, 0.0], [0.0, 2.5, 1.0]])
    y = rng.integers(0, 3, N)
    X = centers[y] + rng.normal(0, 1.0, (N, 3))
    partly = np.where(rng.random(N) < 0.25, y, -1)
    for name, values, chunks in (("X.zarr", X, (1000, 3)), ("y.zarr", partly, (1000,))):
        array = zarr.create_array(
            str(root / name), shape=values.shape, chunks=chunks, dtype=values.dtype
        )
        array[...] = values
    table = pd.DataFrame({"a": X[:, 0], "b": X[:, 1], "c": X[:, 2], "label": partly})
    table.to_parquet(root / "table.parquet", row_group_size=1000)
    return dict(
        X=X,
        partly=partly,
        x=str(root / "X.zarr"),
        y=str(root / "y.zarr"),
        table=str(root / "table.parquet"),
    )


@pytest.fixture(scope="module")
def cluster(local_cluster):
    return local_cluster.scheduler_address


def scheduler_transitions(address):
    from distributed import Client

    with Client(address, set_as_default=False) as client:
        return client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.transition_counter)


def task_names(state, expected):
    runs = wait_for(
        lambda: task_runs(state.state_details.flow_run_id),
        lambda r: len(r) >= expected and all(t.state_type for t in r),
        what=f"{expected} task runs",
    )
    return sorted(run.name for run in runs)


def assert_same(saved, library, X):
    assert type(saved) is type(library)
    np.testing.assert_array_equal(saved.predict_proba(X), library.predict_proba(X))
    np.testing.assert_array_equal(saved.predict(X), library.predict(X))


def test_train_with_labels_saves_the_library_classifier(prefect_api, stores, cluster, tmp_path):
    from flows.train import train

    model_url = str(tmp_path / "classifier")
    transitions = scheduler_transitions(cluster)
    state = train(
        stores["x"], 2, model_url, labels_url=stores["y"], scheduler_address=cluster,
        return_state=True, **FIT,
    )  # fmt: skip
    assert state.is_completed(), state
    fitted = scheduler_transitions(cluster) - transitions
    assert fitted > 50  # the passes ran on the cluster
    library = DiagGMMClassifier(2, **FIT).fit(stores["x"], stores["y"])
    saved = load_any(model_url)
    assert_same(saved, library, stores["X"])
    np.testing.assert_array_equal(saved.lower_bounds_, library.lower_bounds_)
    unlabelled = int((stores["partly"] == -1).sum())
    assert state.result() == {
        "model_url": model_url,
        "estimator": "classifier",
        "n_iter": library.n_iter_,
        "converged": library.converged_,
        "lower_bound": pytest.approx(library.lower_bounds_[-1], rel=1e-12),
        "classes": [0, 1, 2],
        "n_labelled": N - unlabelled,
        "n_unlabelled": unlabelled,
    }
    assert task_names(state, 1) == ["fit-classifier"]
    # checkpointed at the default checkpoint_url: the same run again takes the finished fit
    from flows.tasks import default_checkpoint_url

    root = zarr.open_group(default_checkpoint_url(model_url), mode="r").attrs
    assert root["format"] == "diaggmm-dist-checkpoint" and root["estimator"] == "DiagGMMClassifier"
    assert root["latest"] == f"step-{library.n_iter_:08d}"  # the start and every iteration
    transitions = scheduler_transitions(cluster)
    again = train(
        stores["x"], 2, model_url, labels_url=stores["y"], scheduler_address=cluster, **FIT
    )
    assert again == state.result()
    rerun = scheduler_transitions(cluster) - transitions
    assert rerun < fitted / 2  # no pass: the checks of the labels and the fingerprints only

    # A Parquet label column: never a feature, the other columns are
    model_url = str(tmp_path / "from-table")
    state = train(
        stores["table"], 1, model_url, labels_url="label", scheduler_address=cluster,
        return_state=True, **FIT,
    )  # fmt: skip
    assert state.is_completed(), state
    saved = load_any(model_url)
    assert saved.feature_names_in_.tolist() == ["a", "b", "c"]
    library = DiagGMMClassifier(**FIT).fit(stores["table"], "label", columns=["a", "b", "c"])
    assert_same(saved, library, stores["X"])


def test_train_bayesian_saves_the_library_fit(prefect_api, stores, cluster, tmp_path):
    from flows.train import train

    settings = dict(
        weight_concentration_prior_type="dirichlet_distribution",
        weight_concentration_prior=0.01,
        weight_threshold=0.02,
        random_state=3,
    )
    model_url = str(tmp_path / "bayes")
    state = train(
        stores["x"], 6, model_url, estimator="bayesian", scheduler_address=cluster,
        return_state=True, **FIT, **settings,
    )  # fmt: skip
    assert state.is_completed(), state
    library = BayesianDiagGMM(n_components=6, **FIT, **settings).fit(stores["x"])
    saved = load_any(model_url)
    assert_same(saved, library, stores["X"])
    result = state.result()
    assert result["estimator"] == "bayesian" and result["n_iter"] == library.n_iter_
    assert result["effective_n_components"] == library.effective_n_components_
    assert task_names(state, 1) == ["fit-bayesian"]
    # checkpointed at the default checkpoint_url: the same run again takes the finished fit
    from flows.tasks import default_checkpoint_url

    root = zarr.open_group(default_checkpoint_url(model_url), mode="r").attrs
    assert root["format"] == "diaggmm-dist-checkpoint" and root["estimator"] == "BayesianDiagGMM"
    again = train(
        stores["x"], 6, model_url, estimator="bayesian", scheduler_address=cluster, **FIT,
        **settings,
    )  # fmt: skip
    assert again["n_iter"] == library.n_iter_ and again["lower_bound"] == result["lower_bound"]


def test_score_flow_writes_a_classifiers_class_codes(prefect_api, stores, cluster, tmp_path):
    from flows.score import score

    names = np.array(["sea", "land", "ice"], dtype=object)[np.maximum(stores["partly"], 0)]
    names[stores["partly"] == -1] = -1  # unlabelled rows, among string labels
    model = DiagGMMClassifier(**FIT).fit(stores["X"], names)
    model.save(tmp_path / "m.zarr")
    out_url = str(tmp_path / "scores.zarr")
    summary = score(str(tmp_path / "m.zarr"), stores["x"], out_url, scheduler_address=cluster)
    assert summary["classes"] == ["ice", "land", "sea"] and summary["n_rows"] == N
    group = zarr.open_group(out_url, mode="r")
    labels, max_resp = group["labels"][...], group["max_resp"][...]
    np.testing.assert_array_equal(np.array(summary["classes"])[labels], model.predict(stores["X"]))
    np.testing.assert_array_equal(max_resp, model.predict_proba(stores["X"]).max(1).astype("f4"))


@pytest.mark.parametrize(
    "n_components, extra, message",
    [
        (2, {"estimator": "classifier"}, "needs labels_url"),
        (2, {"estimator": "bayesian", "labels_url": "{y}"}, "does not use labels"),
        ([2, 3], {"estimator": "bayesian"}, "takes one n_components"),
        ([1, 2], {"labels_url": "{y}"}, "takes one n_components"),
        (1, {"labels_url": "{y}", "var_smoothing": -1.0}, "var_smoothing must be"),
        (3, {"estimator": "bayesian", "weight_concentration_prior": 0.0}, "concentration_prior"),
    ],
)
def test_a_wrong_estimator_choice_is_refused_before_any_work(
    prefect_api, stores, tmp_path, n_components, extra, message
):
    from flows.train import train

    extra = {
        key: value.format(y=stores["y"], tmp=tmp_path) if isinstance(value, str) else value
        for key, value in extra.items()
    }
    # no scheduler address: a flow that got past the checks would start a LocalCluster and fit
    state = train(stores["x"], n_components, str(tmp_path / "m"), return_state=True, **extra)
    assert state.is_failed()
    with pytest.raises(ValueError, match=message):
        state.result()
    assert list(tmp_path.iterdir()) == []
