"""The EM driver's public API (:mod:`diaggmm_dist.fitting`, :mod:`diaggmm_dist.data_pass`)."""

import copy
import warnings

import dask.array as da
import numpy as np
import pytest
import zarr
from sklearn.exceptions import ConvergenceWarning

from diaggmm_dist import DiagGMM, engine
from diaggmm_dist.data_pass import DataPass, check_in_memory
from diaggmm_dist.em_settings import EMSettings, checkpoint_identity
from diaggmm_dist.fitting import EMRun
from diaggmm_dist.initialization import initial_parameters_of_models


@pytest.fixture(scope="module")
def X():
    rng = np.random.default_rng(3)
    centers = np.array([[0.0, 0.0, 0.0], [6.0, 0.0, 1.0], [0.0, 5.0, -2.0]])
    rows = centers[rng.integers(3, size=3000)] + rng.standard_normal((3000, 3))
    return da.from_array(rows, chunks=(500, 3))


def _initial_models(X, sizes, data_pass, seed=0):
    random_state = np.random.RandomState(seed)

    def initial_models(indices):
        return initial_parameters_of_models(
            X, [sizes[i] for i in indices], "kmeans", random_state, 1e-6, data_pass
        )

    return initial_models, random_state


def _run(X, sizes, settings, checkpoint=None, until=None, on_iteration=None, identity=None):
    data_pass = DataPass(X, "float64")
    identity = identity or checkpoint_identity(
        DiagGMM(max(sizes), tol=settings.tol).get_params(), engine.fingerprint(X), sizes=list(sizes)
    )
    with EMRun.open(data_pass, settings, checkpoint, identity, on_iteration=on_iteration) as run:
        initial_models, random_state = _initial_models(X, sizes, data_pass)
        run.initialize(len(sizes), initial_models, random_state)
        run.run(until)
    return run


def _assert_same_states(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert (x.index, x.iteration, x.converged) == (y.index, y.iteration, y.converged)
        assert x.lower_bounds == y.lower_bounds
        for name in ("weights", "means", "covariances", "precisions"):
            np.testing.assert_array_equal(getattr(x, name), getattr(y, name))


def test_run_paused_then_continued_equals_an_uninterrupted_run(X, tmp_path):
    settings = EMSettings(tol=0.0, max_iter=12)  # never converges: every block runs
    whole = _run(X, [2, 3], settings).states
    url = tmp_path / "run.zarr"
    paused = _run(X, [2, 3], settings, checkpoint=url, until=4)
    assert [state.iteration for state in paused.states] == [4, 4]
    assert not paused.finished and not paused.states[0].finished
    # a second block, then the rest: every block resumes where the checkpoint stopped
    seen = []
    _run(X, [2, 3], settings, checkpoint=url, until=9, on_iteration=seen.append)
    assert sorted({row["iteration"] for row in seen}) == [5, 6, 7, 8, 9]
    rest = _run(X, [2, 3], settings, checkpoint=url)
    assert rest.finished
    _assert_same_states(rest.states, whole)


def test_until_beyond_max_iter_stops_at_max_iter(X):
    run = _run(X, [2], EMSettings(tol=0.0, max_iter=3), until=10)
    assert run.states[0].iteration == 3 and run.states[0].finished


def test_on_iteration_gets_one_dict_per_model_and_iteration(X):
    seen = []
    run = _run(X, [2, 3], EMSettings(tol=1e-3, max_iter=6), on_iteration=seen.append)
    assert set(seen[0]) == {"restart", "iteration", "lower_bound", "change", "converged", "seconds"}
    for state in run.states:
        rows = [row for row in seen if row["restart"] == state.index]
        assert [row["iteration"] for row in rows] == list(range(1, state.iteration + 1))
        assert [row["lower_bound"] for row in rows] == state.lower_bounds
        assert rows[-1]["converged"] == state.converged
        assert rows[0]["change"] == np.inf  # from no lower bound (-inf)


def test_models_side_by_side_share_passes_and_equal_runs_alone(X, monkeypatch):
    settings = EMSettings(tol=1e-6, max_iter=8)
    data_pass = DataPass(X, "float64")
    initial_models, _ = _initial_models(X, [2, 3, 4], data_pass)
    starts = initial_models(range(3))
    passes = []
    real = engine.pass_statistics
    monkeypatch.setattr(
        engine, "pass_statistics", lambda *a, **k: passes.append(1) or real(*a, **k)
    )
    together = EMRun(data_pass, settings)
    together.initialize(3, lambda indices: [starts[i] for i in indices])
    together.run()
    assert len(passes) == max(state.iteration for state in together.states)
    for i, start in enumerate(starts):
        alone = EMRun(DataPass(X, "float64"), settings)
        alone.initialize(1, lambda _: [start])
        alone.run()
        # equal up to rounding: the stacked pass shifts every model by the first one's center
        assert alone.states[0].iteration == together.states[i].iteration
        np.testing.assert_allclose(
            alone.states[0].lower_bounds, together.states[i].lower_bounds, rtol=1e-12
        )
        np.testing.assert_allclose(alone.states[0].means, together.states[i].means, rtol=1e-9)
    best = max(state.lower_bound for state in together.states)
    assert together.best.lower_bound == best


def test_an_identity_of_other_settings_is_refused(X, tmp_path):
    identity = checkpoint_identity(DiagGMM(2, tol=0.1).get_params(), engine.fingerprint(X))
    with pytest.raises(ValueError, match="tol"):
        EMRun.open(DataPass(X, "float64"), EMSettings(tol=0.2), tmp_path / "c.zarr", identity)


def test_step_returns_nothing_when_every_model_stopped(X):
    run = _run(X, [2], EMSettings(tol=1e-3, max_iter=2))
    assert run.finished and run.step() == [] and run.running() == []


def test_checkpoint_identity_leaves_max_iter_out():
    a = checkpoint_identity(DiagGMM(3, max_iter=5).get_params(), "fp")
    b = checkpoint_identity(DiagGMM(3, max_iter=50).get_params(), "fp")
    assert a == b
    assert checkpoint_identity(DiagGMM(3, tol=1e-4).get_params(), "fp") != a
    assert checkpoint_identity(DiagGMM(3).get_params(), "fp", candidates=[2, 3])["config"][
        "candidates"
    ] == [2, 3]


def test_fit_in_blocks_with_until_equals_one_fit(X, tmp_path):
    params = dict(n_components=3, n_init=2, tol=0.0, max_iter=15, random_state=0)
    with pytest.warns(ConvergenceWarning):
        whole = DiagGMM(**params).fit(X)
    url = tmp_path / "fit.zarr"
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)  # a pause is not a verdict
        paused = DiagGMM(**params).fit(X, checkpoint=url, until=5)
    assert paused.n_iter_ == 5 and not paused.converged_
    with pytest.warns(ConvergenceWarning):
        rest = DiagGMM(**params).fit(X, checkpoint=url)
    assert rest.n_iter_ == whole.n_iter_ and rest.best_init_ == whole.best_init_
    assert rest.lower_bounds_ == whole.lower_bounds_
    for name in ("weights_", "means_", "covariances_", "precisions_"):
        np.testing.assert_array_equal(getattr(rest, name), getattr(whole, name))


def test_check_in_memory_refuses_what_the_first_pass_refuses():
    with pytest.raises(ValueError, match="NaN"):
        check_in_memory(np.array([[0.0, np.nan]]), "error")
    with pytest.raises(ValueError, match="every sample weight is zero"):
        check_in_memory(np.ones((2, 2)), "error", np.zeros(2))
    check_in_memory(np.array([[0.0, np.nan], [1.0, 2.0]]), "drop")


def test_the_checkpoint_format_keeps_its_restart_names(X, tmp_path):
    # TrainingState.index is stored as the attribute "restart" of each restart, in order; the
    # restarts' planes (here of two shapes) share one array
    url = tmp_path / "names.zarr"
    _run(X, [2, 3], EMSettings(tol=1e-3, max_iter=2), checkpoint=url)
    root = zarr.open_group(str(url), mode="r")
    step = root[root.attrs["latest"]]
    assert sorted(step.array_keys()) == ["planes"]
    restarts = step.attrs["restarts"]
    assert [r["restart"] for r in restarts] == [0, 1]
    assert [r["shape"] for r in restarts] == [[2, X.shape[1]], [3, X.shape[1]]]
    assert step["planes"].shape == (3 * 5 * X.shape[1],)


def test_a_warm_start_in_blocks_equals_one_warm_fit(X, tmp_path):
    with pytest.warns(ConvergenceWarning):
        start = DiagGMM(3, tol=0.0, max_iter=2, random_state=1).fit(X)

    def warm():
        return copy.deepcopy(start).set_params(warm_start=True, max_iter=9)

    with pytest.warns(ConvergenceWarning):
        whole = warm().fit(X)
    url = tmp_path / "warm.zarr"
    paused = warm().fit(X, checkpoint=url, until=4)
    assert paused.n_iter_ == 4 and len(paused.lower_bounds_) == 4
    with pytest.warns(ConvergenceWarning):
        rest = warm().fit(X, checkpoint=url)
    assert rest.lower_bounds_ == whole.lower_bounds_
    np.testing.assert_array_equal(rest.means_, whole.means_)
    np.testing.assert_array_equal(rest.covariances_, whole.covariances_)


@pytest.mark.parametrize("until", [-1, 2.5, "3"])
def test_fit_refuses_a_bad_until(X, until):
    with pytest.raises(ValueError, match="until must be"):
        DiagGMM(2).fit(X, until=until)
