"""In-memory rows fitted under a distributed Client: persisted once per fit, or sent every pass.

1M x 16 float32 numpy rows (default chunking) on a LocalCluster of two single-threaded worker
processes. One E-step pass (one EM iteration's read) is timed ``--passes`` times through a
:class:`~diaggmm_dist.data_pass.DataPass`, alternately with the chunks held on the cluster
(:func:`diaggmm_dist.engine.held_on_cluster`, the library's way) and carried in every pass's
graph (as before issue 21); ``--rounds`` rounds of each. The report gives each way's best and
median seconds per pass, and checks that both give the same statistics to the bit.

    python bench/in_memory_cluster.py [--rows 1000000 --features 16 --passes 10 --rounds 3]
"""

import argparse
import statistics
import time

import numpy as np
from distributed import Client, LocalCluster

from diaggmm_dist import engine, inputs
from diaggmm_dist.data_pass import DataPass
from diaggmm_dist.em import e_step_models


def timed_passes(X, model, passes, held):
    """Seconds of each pass (the first, which persists or warms up, left out) and the blocks."""
    hold = engine.held_on_cluster
    if not held:
        engine.held_on_cluster = lambda array: array
    try:
        data_pass = DataPass.of_samples(inputs.as_samples(X), "float32", "error")
        times = []
        for _ in range(passes + 1):
            start = time.perf_counter()
            blocks = e_step_models(data_pass, [model])[0]
            times.append(time.perf_counter() - start)
        return times[1:], np.asarray(blocks)
    finally:
        engine.held_on_cluster = hold


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--features", type=int, default=16)
    parser.add_argument("--passes", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    X = rng.normal(size=(args.rows, args.features)).astype(np.float32)
    model = (np.full(4, 0.25), rng.normal(size=(4, args.features)), np.ones((4, args.features)))
    times, blocks = {True: [], False: []}, {}
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster),
    ):
        for _ in range(args.rounds):
            for held in (True, False):
                seconds, blocks[held] = timed_passes(X, model, args.passes, held)
                times[held] += seconds
    for held, name in ((True, "held on the cluster"), (False, "sent with every pass")):
        print(
            f"{name}: best {min(times[held]) * 1e3:.1f} ms, median "
            f"{statistics.median(times[held]) * 1e3:.1f} ms per pass ({len(times[held])} passes)"
        )
    print("same statistics to the bit:", np.array_equal(blocks[True], blocks[False]))


if __name__ == "__main__":
    main()
