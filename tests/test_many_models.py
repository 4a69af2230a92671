"""Many models per data pass: restarts side by side (n_init) and the stacked statistics behind
them.
"""

import dask.array as da
import numpy as np
import pytest
from conftest import Crash, crash_after, mixture_data

from diaggmm_dist import DiagGMM, engine, initialization, kernels, seeding, select_n_components
from diaggmm_dist.data_pass import DataPass
from diaggmm_dist.stores.checkpoint import CheckpointMismatchError


@pytest.fixture(scope="module")
def data():
    return mixture_data(6000, 4, 5, seed=21)[0]


def _count_passes(monkeypatch, kinds=None):
    """Record the number of models each data pass serves (and, in ``kinds``, the pass's kind)."""
    real, served = engine.pass_statistics, []

    def counting(X, responsibilities, *args, **kwargs):
        kind = responsibilities[0]
        served.append(
            len(responsibilities[2]) if kind == "random" else len(responsibilities[1].model_sizes)
        )
        if kinds is not None:
            kinds.append(kind)
        return real(X, responsibilities, *args, **kwargs)

    monkeypatch.setattr(engine, "pass_statistics", counting)
    return served


def _count_samples(monkeypatch):
    """Record the rows of every ``engine.take_rows`` read bigger than the fingerprint's (16
    rows).
    """
    real, taken = engine.take_rows, []

    def counting(X, rows):
        if len(rows) > 16:
            taken.append(len(rows))
        return real(X, rows)

    monkeypatch.setattr(engine, "take_rows", counting)
    return taken


# Every stacked model is normalized in the same compiled call; without weights, each
# component's Σ r and each model's Σ log p come from that call too.
@pytest.mark.parametrize("with_weights", [True, False])
@pytest.mark.parametrize("sizes", [(2, 3, 5), (4, 4, 4)])
def test_stacked_statistics_equal_each_model_on_its_own(sizes, with_weights):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5000, 5))
    x[::7, 2] = np.nan
    weights = rng.uniform(0, 2, 5000) if with_weights else None
    models = [
        kernels.log_prob_coefficients(
            np.full(k, 1 / k),
            rng.standard_normal((k, 5)),
            rng.uniform(0.5, 2, (k, 5)),
            np.zeros(5),
            np.float64,
        )
        for k in sizes
    ]
    stacked = kernels.stack_coefficients(models)
    assert stacked.model_sizes == sizes
    for missing in ("marginalize", "drop", "error"):
        together = kernels.chunk_statistics(
            np.nan_to_num(x) if missing == "error" else x, ("gaussian", stacked), missing, weights
        )
        assert together.shape[0] == kernels.n_stat_rows(sizes) == sum(sizes) + 3
        for model, block in zip(models, kernels.model_statistics(together, stacked.model_sizes)):
            alone = kernels.chunk_statistics(
                np.nan_to_num(x) if missing == "error" else x, ("gaussian", model), missing, weights
            )
            np.testing.assert_allclose(block, alone, rtol=1e-12, atol=1e-9)


def test_models_with_different_shifts_cannot_be_stacked():
    one = kernels.log_prob_coefficients(
        np.ones(1), np.zeros((1, 2)), np.ones((1, 2)), np.zeros(2), np.float64
    )
    other = kernels.log_prob_coefficients(
        np.ones(1), np.zeros((1, 2)), np.ones((1, 2)), np.ones(2), np.float64
    )
    with pytest.raises(ValueError, match="share the shift"):
        kernels.stack_coefficients([one, other])


def test_restarts_share_every_data_pass(data, monkeypatch):
    served = _count_passes(monkeypatch)
    gmm = DiagGMM(5, n_init=4, init_params="random", random_state=0, tol=0, max_iter=10).fit(data)
    # one pass draws every restart's random responsibilities, then 10 iterations, each one
    # pass for all four
    assert served == [4] + [4] * 10
    assert len(gmm.lower_bounds_per_init_) == 4
    assert all(len(bounds) == 10 for bounds in gmm.lower_bounds_per_init_)
    finals = [bounds[-1] for bounds in gmm.lower_bounds_per_init_]
    assert gmm.best_init_ == int(np.argmax(finals))
    assert gmm.lower_bound_ == max(finals)
    assert len(set(finals)) > 1  # the restarts really differ


def test_kmeans_restarts_share_the_sample_and_the_lloyd_passes(data, monkeypatch):
    monkeypatch.setattr(seeding, "SAMPLE_ROWS", 500)  # a sample smaller than the data: Lloyd moves
    kinds = []
    served, taken = _count_passes(monkeypatch, kinds), _count_samples(monkeypatch)
    gmm = DiagGMM(5, n_init=4, init_params="kmeans", random_state=0, tol=0, max_iter=10).fit(data)
    # one sample read, then at most LLOYD_PASSES passes, the first for all four restarts,
    # each later one for those whose centers still move; then 10 EM passes for all four
    assert taken == [500]
    init = served[:-10]
    assert set(kinds[: len(init)]) == {"nearest"} and served[-10:] == [4] * 10
    assert 1 <= len(init) <= seeding.LLOYD_PASSES
    assert init[0] == 4 and init == sorted(init, reverse=True)
    finals = [bounds[-1] for bounds in gmm.lower_bounds_per_init_]
    assert gmm.best_init_ == int(np.argmax(finals)) and gmm.lower_bound_ == max(finals)


@pytest.mark.parametrize("init_params", ["kmeans", "k-means++", "random_from_data", "random"])
def test_every_restart_starts_from_centers_of_its_own(init_params):
    # one blob and no clusters: k-means has many local optima (on separated clusters every
    # restart would find the same centers, only in another order)
    X = da.from_array(np.random.default_rng(8).standard_normal((6000, 4)), chunks=(1000, 4))
    models = initialization.initial_parameters_of_models(
        X, [5] * 4, init_params, np.random.RandomState(0), 1e-6, DataPass(X, "float64")
    )
    assert len(models) == 4 and all(means.shape == (5, 4) for _, means, _ in models)
    for i in range(4):
        for j in range(i):
            assert not np.allclose(np.sort(models[i][1], axis=0), np.sort(models[j][1], axis=0))
    # the first is the one-model initialization with the same random numbers
    alone = initialization.initial_parameters(
        X, 5, init_params, np.random.RandomState(0), 1e-6, DataPass(X, "float64")
    )
    for got, want in zip(models[0], alone):
        np.testing.assert_allclose(got, want, rtol=1e-12)


@pytest.mark.parametrize("init_params", ["kmeans", "random"])
def test_the_first_restart_is_the_single_initialization_fit(data, monkeypatch, init_params):
    monkeypatch.setattr(seeding, "SAMPLE_ROWS", 500)  # the sample's rows are drawn too
    single = DiagGMM(5, init_params=init_params, random_state=3, tol=0, max_iter=15).fit(data)
    many = DiagGMM(5, n_init=3, init_params=init_params, random_state=3, tol=0, max_iter=15).fit(
        data
    )
    # restart 0 draws the same random numbers (after the same sample), and its shifts are the
    # ones used: the same numbers up to the order of a few float additions inside the (larger)
    # matrix products
    np.testing.assert_allclose(many.lower_bounds_per_init_[0], single.lower_bounds_, rtol=1e-12)
    # The kept restart is the best of the finals (the first of equals, as scikit-learn keeps
    # it), so it is no worse than the single fit up to that rounding; a plain ``>=`` passed
    # only when the restarts' sums happened to round upwards (kmeans: restart 0 ties the
    # others and ends 1 ulp above the single fit).
    finals = [bounds[-1] for bounds in many.lower_bounds_per_init_]
    assert (
        many.best_init_ == int(np.argmax(finals)) and many.lower_bound_ == finals[many.best_init_]
    )
    assert many.lower_bound_ >= single.lower_bound_ - 1e-12 * abs(single.lower_bound_)


def test_restarts_that_converge_stop_costing_work(data, monkeypatch):
    served = _count_passes(monkeypatch)
    gmm = DiagGMM(5, n_init=4, init_params="random", random_state=1, tol=1e-3, max_iter=300).fit(
        data
    )
    assert served[0] == 4  # one initialization pass for all four
    em = served[1:]
    lengths = sorted(len(bounds) for bounds in gmm.lower_bounds_per_init_)
    assert lengths[0] < lengths[-1]  # they converge at different iterations
    # each pass serves exactly the restarts still running
    assert em == [sum(length > i for length in lengths) for i in range(lengths[-1])]


def test_n_init_below_one_is_refused(data):
    with pytest.raises(ValueError, match="n_init"):
        DiagGMM(2, n_init=0).fit(data)


# ------------------------------------------------------------------ choosing K in one pass
@pytest.fixture(scope="module")
def separated():
    """Four well separated components in 3-D."""
    rng = np.random.default_rng(5)
    centers = np.array([[0, 0, 0], [12, 0, 0], [0, 12, 0], [0, 0, 12]], dtype=float)
    labels = rng.integers(0, 4, 8000)
    return centers[labels] + rng.standard_normal((8000, 3)) * rng.uniform(0.7, 1.3, (4, 3))[labels]


def test_bic_picks_the_true_number_of_components(separated, monkeypatch):
    kinds = []
    served, taken = _count_passes(monkeypatch, kinds), _count_samples(monkeypatch)
    result = select_n_components(
        separated, [1, 2, 4, 6, 8], "bic", random_state=0, tol=1e-4, max_iter=200
    )
    assert result.best.n_components == 4
    assert [row["n_components"] for row in result.table] == [1, 2, 4, 6, 8]
    by_k = {row["n_components"]: row for row in result.table}
    assert by_k[4]["bic"] == min(row["bic"] for row in result.table)
    # the held-out rows agree: 4 is far better than 2, and more components gain almost nothing
    assert by_k[4]["heldout_log_likelihood"] > by_k[2]["heldout_log_likelihood"] + 0.5
    assert abs(by_k[8]["heldout_log_likelihood"] - by_k[4]["heldout_log_likelihood"]) < 0.05
    # every candidate was initialized from one sample and in the same Lloyd passes, the first
    # for all five; then the EM passes served every candidate still running, all five at first
    init = served[: kinds.index("gaussian")]
    assert len(taken) == 1 and set(kinds[: len(init)]) == {"nearest"}
    assert init[0] == 5 and len(init) <= seeding.LLOYD_PASSES
    em = [models for models in served[len(init) :] if models > 1]
    assert em[0] == 5 and max(em) == 5
    assert len(served) < 5 * max(row["n_iter"] for row in result.table)


def test_selected_models_are_complete_estimators(separated):
    result = select_n_components(separated, [3, 4], "heldout", random_state=1)
    assert result.criterion == "heldout"
    model = result.models[3]
    assert model.n_components == 3 and model.means_.shape == (3, 3)
    # the table's BIC is the model's own on the fitted rows (the held-out ones excluded)
    from diaggmm_dist.selection import heldout_rows

    fitted = separated[~heldout_rows(np.arange(len(separated)), 0.1)]
    row = result.table[0]
    np.testing.assert_allclose(row["bic"], model.bic(fitted), rtol=1e-9)
    np.testing.assert_allclose(row["log_likelihood"], model.score(fitted), rtol=1e-9)
    held = separated[heldout_rows(np.arange(len(separated)), 0.1)]
    np.testing.assert_allclose(row["heldout_log_likelihood"], model.score(held), rtol=1e-9)
    assert "(chosen)" in result.to_markdown()


@pytest.mark.parametrize(
    "candidates, criterion, extra, message",
    [
        ([], "bic", {}, "candidates is empty"),
        ([2, 0], "bic", {}, "integers >= 1"),
        ([2, 2.5], "bic", {}, "integers >= 1"),
        ([2, 2], "bic", {}, "repeated"),
        ([2], "loglik", {}, "criterion must be one of"),
        ([2], "heldout", {"heldout_fraction": 0}, "needs held-out rows"),
        ([2], "bic", {"heldout_fraction": 1.5}, "heldout_fraction"),
        ([2], "bic", {"n_init": 3}, "n_init must be 1"),
        ([2], "bic", {"n_components": 3}, "sets n_components itself"),
    ],
)
def test_bad_selection_settings_are_refused_before_any_work(
    separated, candidates, criterion, extra, message
):
    with pytest.raises(ValueError, match=message):
        select_n_components(separated, candidates, criterion, **extra)


@pytest.mark.parametrize("passes", [0, 3, 9])
def test_a_selection_resumes_from_its_checkpoint(separated, tmp_path, monkeypatch, passes):
    # one initialization pass, 8 EM passes (tol=0), then 2 passes scoring the fitted and held-out
    # rows
    settings = dict(random_state=2, tol=0, max_iter=8)
    whole = _count_passes(monkeypatch)
    straight = select_n_components(separated, [2, 4], "bic", **settings)
    monkeypatch.undo()
    url = str(tmp_path / "selection.checkpoint")
    crash_after(monkeypatch, passes)
    with pytest.raises(Crash):
        select_n_components(separated, [2, 4], "bic", checkpoint=url, **settings)
    monkeypatch.undo()
    served = _count_passes(monkeypatch)
    resumed = select_n_components(separated, [2, 4], "bic", checkpoint=url, **settings)
    assert resumed.table == straight.table
    for k in (2, 4):
        for name in ("weights_", "means_", "covariances_"):
            np.testing.assert_array_equal(
                getattr(resumed.models[k], name), getattr(straight.models[k], name)
            )
    # what was checkpointed is not done again
    assert len(whole) == 11 and len(served) == 11 - passes
    # another selection (other candidates) is refused rather than resumed
    with pytest.raises(CheckpointMismatchError, match="belongs to a different run"):
        select_n_components(separated, [2, 3], "bic", checkpoint=url, **settings)
