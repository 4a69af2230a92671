"""The compiled E-step loops (diaggmm_dist.compiled) against numpy and exact values."""

import subprocess
import sys

import numpy as np
import pytest

from diaggmm_dist import compiled, kernels


def _ulps(values, exact):
    """Error of ``values`` in units in the last place of the value nearest ``exact`` in their dtype."""
    return np.abs(values.astype(exact.dtype) - exact) / np.spacing(exact.astype(values.dtype)).astype(exact.dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_exp_is_within_two_ulps_of_the_exact_value_over_the_whole_range(dtype):
    exact_dtype = np.float64 if dtype == np.float32 else np.longdouble
    if np.finfo(exact_dtype).eps > 1e-3 * np.finfo(dtype).eps:
        pytest.skip("no extended precision to check float64 against on this platform")
    rng = np.random.default_rng(0)
    lowest = compiled.UNDERFLOW[np.dtype(dtype)]
    grid = np.concatenate([np.linspace(lowest, 0, 3_000_001), rng.uniform(-20, 0, 1_000_000),
                           -np.logspace(-12, 0, 10_000)]).astype(dtype)
    ulps = _ulps(compiled.exp(grid, dtype), np.exp(grid.astype(exact_dtype)))
    assert ulps.max() <= 2.0, f"worst {float(ulps.max()):.2f} ulp at x = {grid[ulps.argmax()]}"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_exp_special_values(dtype):
    lowest = compiled.UNDERFLOW[np.dtype(dtype)]
    values = compiled.exp([0.0, -0.0, -np.inf, np.nan, lowest - 0.01, -1e5, -1e-30, lowest], dtype)
    assert values[0] == 1.0 and values[1] == 1.0 and values[6] == 1.0  # the row maximum gets exactly 1
    assert values[2] == 0.0 and values[4] == 0.0 and values[5] == 0.0
    assert np.isnan(values[3])
    assert values[7] >= np.finfo(dtype).smallest_normal  # no subnormal results


def _reference(scores):
    """The same normalisation in numpy, float64."""
    scores = scores.astype(np.float64)
    top = scores.max(axis=-2)
    responsibilities = np.exp(scores - top[..., None, :])
    total = responsibilities.sum(axis=-2)
    return responsibilities / total[..., None, :], top + np.log(total)


def _numpy_path(scores):
    """kernels.normalise_log_scores on a copy laid out so that it takes its numpy code."""
    copy = np.asfortranarray(scores)
    assert not copy.flags.c_contiguous
    with np.errstate(invalid="ignore"):  # NaN and -inf - -inf, as in the kernels' callers
        log_norm = kernels.normalise_log_scores(copy)
    return copy, log_norm


TOLERANCE = {np.float32: 1e-6, np.float64: 1e-14}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(16, 8192), (3, 5, 1000), (1, 1, 7), (64, 1)])
def test_normalise_matches_numpy(shape, dtype):
    rng = np.random.default_rng(1)
    scores = (rng.normal(-40, 25, shape)).astype(dtype)
    expected, expected_log = _reference(scores)
    log_norm = kernels.normalise_log_scores(scores)  # contiguous: the compiled path
    assert log_norm.shape == shape[:-2] + shape[-1:] and log_norm.dtype == dtype
    tol = TOLERANCE[dtype]
    np.testing.assert_allclose(scores, expected, rtol=0, atol=tol)
    np.testing.assert_allclose(log_norm, expected_log, rtol=tol, atol=10 * tol)
    np.testing.assert_allclose(scores.sum(axis=-2), 1.0, rtol=0, atol=tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_normalise_keeps_numpys_meaning_of_nan_and_minus_infinity(dtype):
    scores = np.array([[0.0, -1.0, np.nan, -np.inf],
                       [-np.inf, -2.0, 0.0, -np.inf],
                       [-3.0, -np.inf, 1.0, -np.inf]], dtype=dtype)
    numpy_scores, numpy_log = _numpy_path(scores)
    log_norm = kernels.normalise_log_scores(scores)
    # A zero-weight component (log weight -inf) gets exactly 0; NaN spoils its row only;
    # a row where every component is -inf is NaN, as numpy makes it.
    assert scores[1, 0] == 0.0 and scores[2, 1] == 0.0
    np.testing.assert_array_equal(np.isnan(scores), np.isnan(numpy_scores))
    np.testing.assert_array_equal(np.isnan(log_norm), np.isnan(numpy_log))
    np.testing.assert_allclose(scores[:, :2], numpy_scores[:, :2], rtol=TOLERANCE[dtype])
    np.testing.assert_allclose(log_norm[:2], numpy_log[:2], rtol=TOLERANCE[dtype])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_non_contiguous_scores_take_the_numpy_path_with_the_same_result(dtype):
    rng = np.random.default_rng(2)
    scores = rng.normal(-10, 5, (16, 200)).astype(dtype)
    numpy_scores, numpy_log = _numpy_path(scores)
    log_compiled = kernels.normalise_log_scores(scores)
    tol = TOLERANCE[dtype]
    np.testing.assert_allclose(numpy_scores, scores, rtol=0, atol=tol)
    np.testing.assert_allclose(numpy_log, log_compiled, rtol=tol, atol=10 * tol)


@pytest.mark.parametrize(("data", "compute"), [(np.float32, np.float32), (np.float64, np.float64),
                                               (np.float64, np.float32), (np.float32, np.float64)])
def test_centred_rows_in_one_pass_are_numpys_two_passes_to_the_bit(data, compute):
    rng = np.random.default_rng(4)
    x = (rng.normal(3, 1e3, (1_000, 7)) * rng.choice([1e-3, 1, 1e3], (1_000, 7))).astype(data)
    shift = rng.normal(3, 10, 7).astype(compute)
    expected_centred = np.empty(x.shape, compute)
    np.subtract(x, shift, out=expected_centred, casting="unsafe")
    expected = (expected_centred, expected_centred * expected_centred)
    buffers = np.full(x.shape, np.nan, compute), np.full(x.shape, np.nan, compute)
    for got in (compiled.centred_rows(x, shift, *buffers), kernels.centred_rows(x, shift, *buffers)):
        for value, want in zip(got, expected):
            assert value.dtype == compute and np.array_equal(value, want)
    # a row view with a stride (every other row): the numpy passes, the same numbers
    got = kernels.centred_rows(x[::2], shift, buffers[0][:500], buffers[1][:500])
    assert np.array_equal(got[0], expected[0][::2]) and np.array_equal(got[1], expected[1][::2])
    with pytest.raises(TypeError, match="C-contiguous float32 or float64"):
        compiled.centred_rows(x[::2], shift, buffers[0][:500], buffers[1][:500])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_scores_added_in_one_pass_are_numpys_two_passes_to_the_bit(dtype):
    rng = np.random.default_rng(6)
    scores, other = (rng.normal(0, 1e4, (5, 3_000)).astype(dtype) for _ in range(2))
    offset = rng.normal(0, 1e2, (5, 1)).astype(dtype)
    other[1, 7], scores[2, 9], other[3, 11] = np.nan, -np.inf, np.inf
    expected = scores.copy()
    expected += other
    expected += offset
    with np.errstate(invalid="ignore"):
        got = compiled.add_scores(scores, other, offset)
    assert got is scores and np.array_equal(got, expected, equal_nan=True)


def test_chunk_statistics_float32_agree_with_float64():
    rng = np.random.default_rng(3)
    x = rng.normal(0, 2, (20_000, 8))
    k = 5
    weights, means, precisions = np.full(k, 1 / k), x[rng.choice(len(x), k)], np.ones((k, 8))
    stats = [kernels.chunk_statistics(x.astype(dtype), ("gaussian", kernels.log_prob_coefficients(
        weights, means, precisions, np.zeros(8), dtype))) for dtype in (np.float32, np.float64)]
    np.testing.assert_allclose(stats[0], stats[1], rtol=2e-5, atol=1e-3)


def test_without_a_writable_cache_directory_the_loops_compile_in_the_process(tmp_path):
    """A read-only install and home: numba has nowhere to cache, and the module still works."""
    script = tmp_path / "no_cache.py"
    script.write_text(
        "import numba.core.caching as caching\n"
        "impl = getattr(caching, 'CacheImpl', None) or caching._CacheImpl\n"
        "impl._locator_classes = []  # what numba finds when nothing is writable\n"
        "import numpy as np\n"
        "from diaggmm_dist import compiled\n"
        "scores = np.log(np.array([[1.0, 3.0], [3.0, 1.0]], dtype=np.float32))\n"
        "log_norm = compiled.normalise_log_scores(scores)\n"
        "assert np.allclose(scores, [[0.25, 0.75], [0.75, 0.25]]) and np.allclose(log_norm, np.log(4)), scores\n"
        "assert type(compiled._exp_rows._cache).__name__ == 'NullCache'  # compiled here, not cached\n"
        "print('ok')\n")
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr
