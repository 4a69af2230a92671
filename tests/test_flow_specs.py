"""The flows' typed task inputs and their per-task-run rows, against a real Prefect server.

A task takes a frozen dataclass (``flows.specs.FitSpec``): Prefect hands it to every attempt
of a retried task as it was given, and the rows of an ``em-iterations`` task run are kept
across its attempts in a per-task-run file (``flows.timings.AttemptRows``), not in module state.
"""

from __future__ import annotations

import dataclasses

import pytest
from prefect_harness import prefect_api, prefect_server  # noqa: F401

pytest.importorskip("prefect")

from flows.specs import ChoiceOfK, FitSpec  # noqa: E402
from flows.timings import AttemptRows  # noqa: E402

SPEC = FitSpec(
    data_url="data.zarr/X",
    checkpoint_url="model.checkpoint",
    model_url="model",
    settings={"n_components": 3, "tol": 1e-3},
    max_iter=10,
    layout={"feature_dim": "band"},
)


def test_a_spec_is_frozen_and_gives_the_fit_options():
    with pytest.raises(dataclasses.FrozenInstanceError):
        SPEC.max_iter = 3
    assert SPEC.fit_options == {"feature_dim": "band", "checkpoint": "model.checkpoint"}
    assert dataclasses.replace(SPEC, layout=None).fit_options == {"checkpoint": "model.checkpoint"}
    assert ChoiceOfK([2, 4], "bic", 0.1).candidates == [2, 4]


def test_a_spec_reaches_every_attempt_of_a_retried_task(prefect_api):
    from prefect import flow, task

    from flows.runtime import TASK_OPTIONS

    attempts = []

    @task(name="spec-echo", **dict(TASK_OPTIONS, retry_delay_seconds=0))
    def echo(spec: FitSpec, choice: ChoiceOfK) -> dict:
        attempts.append((spec, choice))
        if len(attempts) == 1:
            raise ConnectionResetError("transient")  # an OSError: retried
        return {"spec": spec, "choice": choice}

    @flow(name="spec-flow")
    def run():
        return echo(SPEC, ChoiceOfK([2, 4], "heldout", 0.2))

    result = run()
    assert len(attempts) == 2
    assert result["spec"] == SPEC and isinstance(result["spec"], FitSpec)
    assert result["choice"] == ChoiceOfK([2, 4], "heldout", 0.2)


def test_rows_are_kept_across_attempts_of_one_task_run_and_forgotten_after(tmp_path):
    first = AttemptRows("run-a")
    first.forget()  # a left-over of an earlier session
    first = AttemptRows("run-a")
    first.add({"iteration": 2, "lower_bound": -1.0, "change": 0.5, "seconds": 0.1})
    first.add({"iteration": 3, "lower_bound": -0.9, "change": 0.1, "seconds": 0.2})
    assert AttemptRows("run-a").rows == {}  # in memory until the attempt fails
    first.keep()
    retry = AttemptRows("run-a")  # the next attempt of the same task run
    retry.add({"iteration": 4, "lower_bound": -0.8, "change": 0.1, "seconds": 0.3})
    assert [row["iteration"] for row in retry.between(3, 4)] == [3, 4]
    assert AttemptRows("run-b").rows == {}  # another task run's
    retry.forget()
    assert AttemptRows("run-a").rows == {} and not retry.path.exists()


def test_rows_outside_a_task_run_are_this_call_s_only():
    rows = AttemptRows(None)
    rows.add({"iteration": 1, "lower_bound": -1.0, "change": None, "seconds": 0.1})
    assert rows.between(1, 1) == [rows.rows[1]] and AttemptRows(None).rows == {}
    rows.forget()


def test_a_block_pauses_the_fit_unfinished_and_the_next_block_continues_it(tmp_path):
    # The train flow's blocks (no Prefect needed): every fit has the flow's max_iter and pauses
    # at its block's last iteration (DiagGMM.fit's until); the next block resumes from there.
    import numpy as np

    from diaggmm_dist import DiagGMM
    from diaggmm_dist.datasets.synthetic import mixture_parameters, write_mixture_zarr
    from flows.tasks import fitted, quiet_convergence

    weights, means, covariances = mixture_parameters(3, 4, seed=0, spread=1.5)
    path = write_mixture_zarr(
        tmp_path / "x.zarr", 4000, weights, means, covariances, chunk_rows=1000, seed=1
    )
    settings = {"n_components": 3, "tol": 0.0, "random_state": 0, "dtype": "float64"}
    spec = FitSpec(f"{path}/X", str(tmp_path / "m.checkpoint"), str(tmp_path / "m"), settings, 6)
    seen = []
    with quiet_convergence():
        start = fitted(spec, 0)
        assert (start.n_iter_, start.converged_, start.max_iter) == (0, False, 6)
        block = fitted(spec, 2, on_iteration=seen.append)
        assert (block.n_iter_, block.converged_) == (2, False)  # paused: not finished
        assert fitted(spec, 2, on_iteration=seen.append).n_iter_ == 2  # nothing left to run
        rest = fitted(spec, 6, on_iteration=seen.append)
        whole = DiagGMM(**settings, max_iter=6).fit(f"{path}/X")
    assert [summary["iteration"] for summary in seen] == [1, 2, 3, 4, 5, 6]
    assert (rest.n_iter_, rest.converged_) == (6, False)
    np.testing.assert_array_equal(rest.lower_bounds_, whole.lower_bounds_)  # bit for bit
    for name in ("weights_", "means_", "covariances_"):
        np.testing.assert_array_equal(getattr(rest, name), getattr(whole, name), err_msg=name)
