"""The compiled E-step loops (diaggmm_dist.compiled) against numpy and exact values."""

import subprocess
import sys

import numpy as np
import pytest

from diaggmm_dist import compiled, kernels


def _ulps(values, exact):
    """Error of ``values`` in units in the last place of the value nearest ``exact`` in their
    dtype.
    """
    return np.abs(values.astype(exact.dtype) - exact) / np.spacing(
        exact.astype(values.dtype)
    ).astype(exact.dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_exp_is_within_two_ulps_of_the_exact_value_over_the_whole_range(dtype):
    exact_dtype = np.float64 if dtype == np.float32 else np.longdouble
    if np.finfo(exact_dtype).eps > 1e-3 * np.finfo(dtype).eps:
        pytest.skip("no extended precision to check float64 against on this platform")
    rng = np.random.default_rng(0)
    lowest = compiled.UNDERFLOW[np.dtype(dtype)]
    grid = np.concatenate(
        [
            np.linspace(lowest, 0, 3_000_001),
            rng.uniform(-20, 0, 1_000_000),
            -np.logspace(-12, 0, 10_000),
        ]
    ).astype(dtype)
    ulps = _ulps(compiled.exp(grid, dtype), np.exp(grid.astype(exact_dtype)))
    assert ulps.max() <= 2.0, f"worst {float(ulps.max()):.2f} ulp at x = {grid[ulps.argmax()]}"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_exp_special_values(dtype):
    lowest = compiled.UNDERFLOW[np.dtype(dtype)]
    values = compiled.exp([0.0, -0.0, -np.inf, np.nan, lowest - 0.01, -1e5, -1e-30, lowest], dtype)
    assert (
        values[0] == 1.0 and values[1] == 1.0 and values[6] == 1.0
    )  # the row maximum gets exactly 1
    assert values[2] == 0.0 and values[4] == 0.0 and values[5] == 0.0
    assert np.isnan(values[3])
    assert values[7] >= np.finfo(dtype).smallest_normal  # no subnormal results


def _reference(scores, offset, sizes):
    """The same normalization in numpy, float64, model by model."""
    scores = scores.astype(np.float64) + offset
    responsibilities, log_likelihood = [], []
    for model in np.split(scores, np.cumsum(sizes)[:-1]):
        top = model.max(axis=0)
        exp = np.exp(model - top)
        total = exp.sum(axis=0)
        responsibilities.append(exp / total)
        log_likelihood.append(top + np.log(total))
    return np.concatenate(responsibilities), np.array(log_likelihood)


def _numpy_path(scores, offset=None, sizes=None):
    """kernels.normalize_log_scores on a copy laid out so that it takes its numpy code."""
    copy = np.repeat(scores, 2, axis=1)[:, ::2]  # every other column: a strided view
    assert not copy.flags.c_contiguous
    with np.errstate(invalid="ignore"):  # NaN and -inf - -inf, as in the kernels' callers
        normalized = kernels.normalize_log_scores(copy, offset, sizes)
    return copy, normalized


TOLERANCE = {np.float32: 1e-6, np.float64: 1e-14}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    ("sizes", "n"), [((16,), 8192), ((5, 5, 5), 1000), ((2, 7, 3), 300), ((1,), 7), ((64,), 1)]
)
def test_normalize_matches_numpy(sizes, n, dtype):
    rng = np.random.default_rng(1)
    scores = (rng.normal(-40, 25, (sum(sizes), n))).astype(dtype)
    offset = rng.normal(0, 10, (sum(sizes), 1)).astype(dtype)
    expected, expected_log = _reference(scores, offset, sizes)
    numpy_scores, numpy_normalized = _numpy_path(scores, offset, sizes)
    log_likelihood, mass, log_likelihood_sum = kernels.normalize_log_scores(
        scores, offset, sizes
    )  # contiguous: compiled
    assert log_likelihood.shape == (len(sizes), n) and log_likelihood.dtype == dtype
    assert mass.dtype == log_likelihood_sum.dtype == np.float64
    tol = TOLERANCE[dtype]
    for got, got_log in ((scores, log_likelihood), (numpy_scores, numpy_normalized.log_likelihood)):
        np.testing.assert_allclose(got, expected, rtol=0, atol=tol)
        np.testing.assert_allclose(got_log, expected_log, rtol=tol, atol=10 * tol)
    for model in np.split(scores, np.cumsum(sizes)[:-1]):
        np.testing.assert_allclose(model.sum(axis=0), 1.0, rtol=0, atol=tol)
    # the sums it returns are the sums of what it wrote, in float64, by either path
    for normalized in (numpy_normalized, (log_likelihood, mass, log_likelihood_sum)):
        np.testing.assert_allclose(normalized[1], expected.sum(axis=1), rtol=10 * tol, atol=tol)
        np.testing.assert_allclose(normalized[2], expected_log.sum(axis=1), rtol=tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_normalize_keeps_numpys_meaning_of_nan_and_minus_infinity(dtype):
    scores = np.array(
        [
            [0.0, -1.0, np.nan, -np.inf, np.inf],
            [-np.inf, -2.0, 0.0, -np.inf, 0.0],
            [-3.0, -np.inf, 1.0, -np.inf, 1.0],
        ],
        dtype=dtype,
    )
    numpy_scores, numpy_normalized = _numpy_path(scores)
    log_likelihood = kernels.normalize_log_scores(scores).log_likelihood[0]
    # A zero-weight component (log weight -inf) gets exactly 0; NaN, or +inf, spoils its row
    # only; a row where every component is -inf is NaN, as numpy makes it.
    assert scores[1, 0] == 0.0 and scores[2, 1] == 0.0
    np.testing.assert_array_equal(np.isnan(scores), np.isnan(numpy_scores))
    np.testing.assert_array_equal(
        np.isnan(log_likelihood), np.isnan(numpy_normalized.log_likelihood[0])
    )
    assert np.isnan(scores[:, 2:]).all() and not np.isnan(scores[:, :2]).any()
    np.testing.assert_allclose(scores[:, :2], numpy_scores[:, :2], rtol=TOLERANCE[dtype])
    np.testing.assert_allclose(
        log_likelihood[:2], numpy_normalized.log_likelihood[0, :2], rtol=TOLERANCE[dtype]
    )


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_minus_infinite_offset_is_a_component_that_gets_nothing(dtype):
    scores = np.random.default_rng(2).normal(-10, 5, (4, 300)).astype(dtype)
    offset = np.array([[0.0], [-np.inf], [1.0], [-np.inf]], dtype)
    log_likelihood, mass, _ = kernels.normalize_log_scores(scores, offset)
    assert (
        (scores[[1, 3]] == 0).all()
        and (mass[[1, 3]] == 0).all()
        and np.isfinite(log_likelihood).all()
    )


@pytest.mark.parametrize(
    ("data", "compute"),
    [
        (np.float32, np.float32),
        (np.float64, np.float64),
        (np.float64, np.float32),
        (np.float32, np.float64),
    ],
)
def test_stacked_rows_in_one_pass_are_numpys_two_passes_to_the_bit(data, compute):
    rng = np.random.default_rng(4)
    x = (rng.normal(3, 1e3, (1_000, 7)) * rng.choice([1e-3, 1, 1e3], (1_000, 7))).astype(data)
    shift = rng.normal(3, 10, 7).astype(compute)
    centered = np.empty(x.shape, compute)
    np.subtract(x, shift, out=centered, casting="unsafe")
    expected = np.concatenate([centered, centered * centered], axis=1)
    out = np.full((1_000, 14), np.nan, compute)
    for got in (compiled.stacked_rows(x, shift, out), kernels.stacked_rows(x, shift, out)):
        assert got.dtype == compute and np.array_equal(got, expected)
    # a row view with a stride (every other row): the numpy passes, the same numbers
    assert np.array_equal(kernels.stacked_rows(x[::2], shift, out[:500]), expected[::2])
    with pytest.raises(TypeError, match="C-contiguous float32 or float64"):
        compiled.stacked_rows(x[::2], shift, out[:500])


def test_chunk_statistics_float32_agree_with_float64():
    rng = np.random.default_rng(3)
    x = rng.normal(0, 2, (20_000, 8))
    k = 5
    weights, means, precisions = np.full(k, 1 / k), x[rng.choice(len(x), k)], np.ones((k, 8))
    stats = [
        kernels.chunk_statistics(
            x.astype(dtype),
            (
                "gaussian",
                kernels.log_prob_coefficients(weights, means, precisions, np.zeros(8), dtype),
            ),
        )
        for dtype in (np.float32, np.float64)
    ]
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
        "log_likelihood, _, _ = compiled.normalize_log_scores(\n"
        "    scores, np.zeros((2, 1)), np.array([2]))\n"
        "assert np.allclose(scores, [[0.25, 0.75], [0.75, 0.25]])"
        " and np.allclose(log_likelihood, np.log(4)), scores\n"
        "assert type(compiled._normalize._cache).__name__ == 'NullCache'"
        "  # compiled here, not cached\n"
        "print('ok')\n"
    )
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr
