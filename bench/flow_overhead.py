"""Prefect overhead: the ``train`` flow against the plain library fit, per EM iteration (issue 5, target 4).

One run, on the same Zarr store on disk (``--rows`` × 32 float32, K=16; written once and cached
under ``bench/results/data/``, the same store as ``bench/out_of_core.py``) and the same dask
LocalCluster (2 single-threaded worker processes):

1. untimed: the flow's initialisation (``init_params="kmeans"``, ``random_state=0``, ``tol=0``,
   ``dtype="float32"``) into a checkpoint at iteration 0 (made afresh each run: the checkpoint
   format may change between versions), copied to two fresh checkpoints; a 1-iteration fit
   that warms the workers and the page cache; a trivial flow run that starts Prefect's
   temporary server (``PREFECT_HOME`` is a temporary directory, as ``make run`` does with its
   own; set ``PREFECT_API_URL`` to use a running server instead);
2. (a) timed: ``DiagGMM(...).fit(store, checkpoint=copy_a)`` with ``max_iter=--iters``: it
   resumes at iteration 0 and runs ``--iters`` iterations, writing a checkpoint after each;
3. (b) timed: the ``train`` flow with the same settings on ``copy_b``: its ``initialise`` task
   finds the initialised checkpoint, its ``em-iterations-*`` tasks run the ``--iters``
   iterations and the last of them saves the model; everything Prefect does (flow run, task
   runs, logs, the convergence artifact) is inside the timing.

Both start from the same state and run the same iterations, so the models must be bit for bit
equal (checked). Reported:

* seconds per iteration of each: the whole timed call divided by ``--iters``;
* **overhead**: (flow − plain) / plain, the flow's extra time per iteration in % of the plain
  fit's; the target is under 3 %;
* overhead outside the passes: the same difference after subtracting each side's own EM
  iteration times (as the library measures them), which removes the pass-to-pass noise of a
  shared machine and leaves what Prefect and the extra fit set-ups of the tasks add;
* the checkpoint write's share of the plain fit's per-iteration time (``Checkpoints.save``
  timed around each call);
* the flow's task runs and their durations as the Prefect API recorded them.

    python bench/flow_overhead.py                    # 10,000,000 rows, 10 iterations
    python bench/flow_overhead.py --rows 1000000     # smoke run

Writes ``bench/results/flow_overhead.json`` (``flow_overhead-<rows>.json`` for other ``--rows``).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the `flows` package and the library, from a clone
sys.path.insert(0, str(ROOT / "bench"))

from _common import machine_info, mixture_store  # noqa: E402  (one description of the machine; the shared store)
RESULTS = ROOT / "bench" / "results"
TARGET_PERCENT = 3.0
D, K = 32, 16  # the data of bench/out_of_core.py
SETTINGS = {"n_components": K, "tol": 0.0, "init_params": "kmeans", "dtype": "float32", "random_state": 0}


def prefect_environment(home):
    """Prefect state under ``home``; a temporary server unless PREFECT_API_URL is set. Before importing prefect."""
    os.environ["PREFECT_HOME"] = str(home)
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")


def initialised_checkpoint(data_url, path):
    """The flow's initialisation (iteration 0) in a new checkpoint at ``path``."""
    from diaggmm_dist import DiagGMM

    start = time.perf_counter()
    DiagGMM(**SETTINGS, max_iter=0).fit(data_url, checkpoint=str(path))
    print(f"initialised {path} in {time.perf_counter() - start:.1f} s", flush=True)
    return path


class CheckpointTimer:
    """Seconds of every ``Checkpoints.save`` inside the block."""

    def __enter__(self):
        from diaggmm_dist.io.checkpoint import Checkpoints

        self.seconds, self._real = [], Checkpoints.save
        real, seconds = self._real, self.seconds

        def save(store, state):
            tick = time.perf_counter()
            try:
                return real(store, state)
            finally:
                seconds.append(time.perf_counter() - tick)

        Checkpoints.save = save
        return self

    def __exit__(self, *exc):
        from diaggmm_dist.io.checkpoint import Checkpoints

        Checkpoints.save = self._real


def flow_task_runs(flow_run_id):
    """Name and seconds (Prefect's start to end) of the flow run's task runs, in start order."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
        flow_run = client.read_flow_run(flow_run_id)
    runs = sorted((run for run in runs if run.start_time), key=lambda run: run.start_time)
    tasks = [{"name": run.name, "attempts": run.run_count,
              "seconds": (run.end_time - run.start_time).total_seconds() if run.end_time else None} for run in runs]
    flow_seconds = ((flow_run.end_time - flow_run.start_time).total_seconds()
                    if flow_run.start_time and flow_run.end_time else None)
    return tasks, flow_seconds


def measure(args, data_url, init_checkpoint, work):
    from distributed import Client, LocalCluster
    from prefect import flow

    from diaggmm_dist import DiagGMM
    from flows.train import train

    iters = args.iters
    warm_ckpt, plain_ckpt, flow_ckpt = (work / f"{name}.checkpoint" for name in ("warm", "plain", "flow"))
    for copy in (warm_ckpt, plain_ckpt, flow_ckpt):
        shutil.copytree(init_checkpoint, copy)

    @flow(name="warm-up")
    def warm_up():
        return 1

    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as cluster, Client(cluster):
        DiagGMM(**SETTINGS, max_iter=1).fit(data_url, checkpoint=str(warm_ckpt))  # workers, page cache: not timed
        warm_up()  # Prefect's temporary server starts here: not timed

        # (a) the plain library fit
        plain_rows = []
        with CheckpointTimer() as checkpoint:
            tick = time.perf_counter()
            plain = DiagGMM(**SETTINGS, max_iter=iters).fit(data_url, checkpoint=str(plain_ckpt),
                                                            on_iteration=plain_rows.append)
            plain_seconds = time.perf_counter() - tick
        print(f"plain fit: {plain_seconds:.2f} s for {iters} iterations", flush=True)

        # (b) the train flow
        tick = time.perf_counter()
        state = train(data_url, SETTINGS["n_components"], str(work / "model.zarr"), checkpoint_url=str(flow_ckpt),
                      init_params=SETTINGS["init_params"], tol=SETTINGS["tol"], max_iter=iters,
                      dtype=SETTINGS["dtype"], random_state=SETTINGS["random_state"],
                      scheduler_address=cluster.scheduler_address, seconds_per_task=args.seconds_per_task,
                      return_state=True)
        flow_seconds = time.perf_counter() - tick
        result = state.result()
        print(f"train flow: {flow_seconds:.2f} s for {iters} iterations", flush=True)

    model = DiagGMM.load(str(work / "model.zarr"))
    identical = all(
        (getattr(model, name) == getattr(plain, name)).all() for name in ("weights_", "means_", "covariances_")
    ) and list(model.lower_bounds_) == list(plain.lower_bounds_) and model.n_iter_ == plain.n_iter_ == iters
    tasks, flow_run_seconds = flow_task_runs(state.state_details.flow_run_id)

    plain_passes = sum(row["seconds"] for row in plain_rows)
    flow_passes = result["seconds_per_iteration"] * iters
    em_tasks = sum(task["seconds"] for task in tasks if task["name"].startswith("em-iterations-"))
    checkpoint_per_iteration = sum(checkpoint.seconds) / len(checkpoint.seconds)
    return {
        "plain": {
            "seconds": plain_seconds, "seconds_per_iteration": plain_seconds / iters,
            "iteration_seconds": [row["seconds"] for row in plain_rows],
            "checkpoint_write_seconds": checkpoint.seconds,
            "checkpoint_write_seconds_per_iteration": checkpoint_per_iteration,
            "checkpoint_write_percent_of_iteration": 100 * checkpoint_per_iteration / (plain_seconds / iters),
        },
        "flow": {
            "seconds": flow_seconds, "seconds_per_iteration": flow_seconds / iters,
            "iteration_seconds_mean": result["seconds_per_iteration"], "flow_run_seconds": flow_run_seconds,
            "task_runs": tasks, "seconds_per_task": args.seconds_per_task,
        },
        # Where the flow's extra time goes, in seconds: outside the EM iterations in the flow and in the
        # plain fit (set-up: opening the data, fingerprint, checkpoint); inside the em-iterations tasks
        # beyond their iterations (task set-ups, the model save); outside Prefect's flow run (creating it,
        # finishing it).
        "seconds_outside_iterations": {"flow": flow_seconds - flow_passes, "plain": plain_seconds - plain_passes},
        "em_tasks_beyond_iterations_seconds": em_tasks - flow_passes,
        "outside_flow_run_seconds": flow_seconds - flow_run_seconds if flow_run_seconds else None,
        "overhead_percent": 100 * (flow_seconds - plain_seconds) / plain_seconds,
        "overhead_outside_passes_percent": 100 * ((flow_seconds - flow_passes) - (plain_seconds - plain_passes))
                                           / plain_seconds,
        "identical_models": bool(identical),
        "lower_bound": float(plain.lower_bound_),
    }


def render(report):
    """The report as text: a Markdown table and the figures behind it."""
    plain, flow_, info = report["plain"], report["flow"], report["machine"]
    outside = report["seconds_outside_iterations"]
    iterations = plain["iteration_seconds"]

    def verdict(percent):
        return "pass" if percent < report["target_percent"] else "falls short"

    return "\n".join([
        f"\n{report['rows']:,} rows x 32, K=16, float32, {report['iterations']} iterations from the same "
        f"initialisation ({info['usable_cpus']} CPUs, {info['cpu_model']}, {report['date']})\n",
        "| run | s | s / iteration |",
        "|---|---:|---:|",
        f"| DiagGMM.fit(store, checkpoint=...) | {plain['seconds']:.2f} | {plain['seconds_per_iteration']:.3f} |",
        f"| train flow (seconds_per_task={flow_['seconds_per_task']:g}) | {flow_['seconds']:.2f} | "
        f"{flow_['seconds_per_iteration']:.3f} |",
        "",
        f"overhead of the flow per iteration: {report['overhead_percent']:+.2f} % of the plain fit "
        f"(target < {report['target_percent']:g} %: {verdict(report['overhead_percent'])})",
        f"  with each side's EM iteration times taken out: {report['overhead_outside_passes_percent']:+.2f} % "
        f"({verdict(report['overhead_outside_passes_percent'])}); spread of the plain fit's iterations: "
        f"{min(iterations):.2f} to {max(iterations):.2f} s",
        f"  outside the EM iterations: flow {outside['flow']:.2f} s, plain fit {outside['plain']:.2f} s; in the "
        f"em-iterations tasks beyond their iterations {report['em_tasks_beyond_iterations_seconds']:.2f} s; "
        f"outside Prefect's flow run {report['outside_flow_run_seconds']:.2f} s",
        f"checkpoint write: {plain['checkpoint_write_seconds_per_iteration'] * 1000:.1f} ms per iteration, "
        f"{plain['checkpoint_write_percent_of_iteration']:.2f} % of the plain fit's iteration",
        "flow task runs: " + ", ".join(f"{t['name']} {t['seconds']:.2f} s" for t in flow_["task_runs"]),
        f"models bit for bit identical: {report['identical_models']}",
    ])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--seconds-per-task", type=float, default=None,
                        help="the train flow's seconds_per_task (default: the flow's default)")
    parser.add_argument("--store", default=str(RESULTS / "data"), help="folder of the cached data stores")
    parser.add_argument("--out", help="JSON output (default: bench/results/flow_overhead[-<rows>].json)")
    args = parser.parse_args(argv)
    home = Path(tempfile.mkdtemp(prefix="flow-overhead-"))
    prefect_environment(home / "prefect")
    from sklearn.exceptions import ConvergenceWarning

    warnings.simplefilter("ignore", ConvergenceWarning)
    from flows.tasks import SECONDS_PER_TASK

    if args.seconds_per_task is None:
        args.seconds_per_task = SECONDS_PER_TASK
    try:
        data_url = str(mixture_store(args.rows, root=args.store))
        init = initialised_checkpoint(data_url, home / "init.checkpoint")
        report = measure(args, data_url, init, home)
    finally:
        shutil.rmtree(home, ignore_errors=True)

    info = machine_info()
    report = {"date": _dt.date.today().isoformat(), "machine": info, "rows": args.rows, "features": 32,
              "components": SETTINGS["n_components"], "iterations": args.iters, "data_url": data_url,
              "target_percent": TARGET_PERCENT, **report}
    out = Path(args.out) if args.out else RESULTS / ("flow_overhead.json" if args.rows == 10_000_000
                                                     else f"flow_overhead-{args.rows}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))

    print(render(report))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
