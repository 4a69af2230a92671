"""The compiled float32 log-sum-exp (diaggmm_dist.softmax32) against numpy in float64."""

import numpy as np
import pytest

from diaggmm_dist import kernels, softmax32


def _ulps(values, exact):
    """Error of float32 ``values`` in units in the last place of the float32 nearest ``exact``."""
    return np.abs(values.astype(np.float64) - exact) / np.spacing(exact.astype(np.float32)).astype(np.float64)


def test_exp_is_within_two_ulps_of_the_exact_value_over_the_whole_range():
    rng = np.random.default_rng(0)
    grid = np.concatenate([np.linspace(softmax32.UNDERFLOW, 0, 3_000_001), rng.uniform(-20, 0, 1_000_000),
                           -np.logspace(-12, 0, 10_000)]).astype(np.float32)
    ulps = _ulps(softmax32.exp(grid), np.exp(grid.astype(np.float64)))
    assert ulps.max() <= 2.0, f"worst {ulps.max():.2f} ulp at x = {grid[ulps.argmax()]}"


def test_exp_special_values():
    values = softmax32.exp([0.0, -0.0, -np.inf, np.nan, softmax32.UNDERFLOW - 0.01, -1e4, -1e-30])
    assert values[0] == 1.0 and values[1] == 1.0 and values[6] == 1.0  # the row maximum gets exactly 1
    assert values[2] == 0.0 and values[4] == 0.0 and values[5] == 0.0
    assert np.isnan(values[3])


def _reference(scores):
    """The same normalisation in float64 numpy."""
    scores = scores.astype(np.float64)
    top = scores.max(axis=-2)
    responsibilities = np.exp(scores - top[..., None, :])
    total = responsibilities.sum(axis=-2)
    return responsibilities / total[..., None, :], top + np.log(total)


@pytest.mark.parametrize("shape", [(16, 8192), (3, 5, 1000), (1, 1, 7), (64, 1)])
def test_normalise_matches_float64_numpy(shape):
    rng = np.random.default_rng(1)
    scores = (rng.normal(-40, 25, shape)).astype(np.float32)
    expected, expected_log = _reference(scores)
    log_norm = kernels.normalise_log_scores(scores)  # float32, contiguous: the compiled path
    assert log_norm.shape == shape[:-2] + shape[-1:] and log_norm.dtype == np.float32
    np.testing.assert_allclose(scores, expected, rtol=0, atol=1e-6)
    np.testing.assert_allclose(log_norm, expected_log, rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(scores.sum(axis=-2), 1.0, rtol=0, atol=1e-6)


def test_normalise_keeps_numpys_meaning_of_nan_and_minus_infinity():
    scores = np.array([[0.0, -1.0, np.nan, -np.inf],
                       [-np.inf, -2.0, 0.0, -np.inf],
                       [-3.0, -np.inf, 1.0, -np.inf]], dtype=np.float32)
    numpy_path = scores.astype(np.float64)
    numpy_log = kernels.normalise_log_scores(numpy_path)
    log_norm = kernels.normalise_log_scores(scores)
    # A zero-weight component (log weight -inf) gets exactly 0; NaN spoils its row only;
    # a row where every component is -inf is NaN, as numpy makes it.
    assert scores[1, 0] == 0.0 and scores[2, 1] == 0.0
    np.testing.assert_array_equal(np.isnan(scores), np.isnan(numpy_path))
    np.testing.assert_array_equal(np.isnan(log_norm), np.isnan(numpy_log))
    np.testing.assert_allclose(scores[:, :2], numpy_path[:, :2], rtol=1e-6)
    np.testing.assert_allclose(log_norm[:2], numpy_log[:2], rtol=1e-6)


def test_non_contiguous_float32_scores_take_the_numpy_path_with_the_same_result():
    rng = np.random.default_rng(2)
    scores = rng.normal(-10, 5, (16, 200)).astype(np.float32)
    view = np.asfortranarray(scores)
    log_view = kernels.normalise_log_scores(view)
    log_compiled = kernels.normalise_log_scores(scores)
    np.testing.assert_allclose(view, scores, rtol=0, atol=1e-6)
    np.testing.assert_allclose(log_view, log_compiled, rtol=1e-6, atol=1e-5)


def test_chunk_statistics_float32_agree_with_float64():
    rng = np.random.default_rng(3)
    x = rng.normal(0, 2, (20_000, 8))
    k = 5
    weights, means, precisions = np.full(k, 1 / k), x[rng.choice(len(x), k)], np.ones((k, 8))
    stats = [kernels.chunk_statistics(x.astype(dtype), ("gaussian", kernels.log_prob_coefficients(
        weights, means, precisions, np.zeros(8), dtype))) for dtype in (np.float32, np.float64)]
    np.testing.assert_allclose(stats[0], stats[1], rtol=2e-5, atol=1e-3)
