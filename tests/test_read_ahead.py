"""Read-ahead (diaggmm_dist.read_ahead): object-storage latency hidden behind compute.

The proxy adds a latency to every request; its log says when each request started and ended,
so overlapping reads are seen there, not timed. No wall-clock limit is asserted.
"""

import os
import pickle
from collections import Counter

import dask
import numpy as np
import pandas as pd
import zarr
from conftest import mixture_data
from distributed import Client
from s3_harness import ENDPOINT_VARIABLES, s3, s3_service  # noqa: F401

from diaggmm_dist import DiagGMM, read_ahead
from diaggmm_dist.data_pass import DataPass
from diaggmm_dist.em import e_step_models
from diaggmm_dist.engine import cluster
from diaggmm_dist.inputs import as_row_chunked, as_samples
from diaggmm_dist.locations import location

LATENCY = 0.2


def write_rows(s3, key, X, chunk_rows):
    store = location(s3.url(key), s3.storage_options).zarr_store()
    array = zarr.create_array(store, shape=X.shape, dtype=X.dtype, chunks=(chunk_rows, X.shape[1]))
    array[:] = X
    return [s3.log_path(f"{key}/c/{i}/0") for i in range(-(-X.shape[0] // chunk_rows))]


def most_in_flight(requests):
    """The most requests of ``requests`` under way at one time (from the log's start and end)."""
    events = sorted([(r.started, 1) for r in requests] + [(r.finished, -1) for r in requests])
    most = now = 0
    for _, step in events:
        now += step
        most = max(most, now)
    return most


def one_pass(X):
    """A statistics pass over ``X`` (one model, as EM runs it)."""
    model = (np.full(2, 0.5), np.zeros((2, X.shape[1])), np.ones((2, X.shape[1])))
    return e_step_models(DataPass(X, "float64", checked=True), [model])[0]


def test_the_wrapper_pickles_without_data_and_tokenizes_alike(s3):
    X = np.random.default_rng(0).normal(size=(8000, 4))
    write_rows(s3, "x.zarr", X, 1000)
    first = as_row_chunked(s3.url("x.zarr"), 1000, s3.storage_options)
    again = as_row_chunked(s3.url("x.zarr"), 1000, s3.storage_options)
    assert first.name == again.name  # the same graph keys for the same array and chunks
    (wrapper,) = [v for v in first.dask.values() if isinstance(v, read_ahead.ReadAhead)] or [
        node.value
        for node in first.dask.values()
        if isinstance(getattr(node, "value", None), read_ahead.ReadAhead)
    ]
    assert (wrapper.depth, wrapper.concurrency) == read_ahead.settings()
    with read_ahead.window():
        np.testing.assert_array_equal(wrapper[0:1000, :], X[:1000])  # starts reads ahead
        assert read_ahead.pending() > 0
        pickled = pickle.dumps(wrapper)
    chunk_bytes = 1000 * 4 * 8
    assert len(pickled) < chunk_bytes / 4, len(pickled)  # the array's address, not its data
    copy = pickle.loads(pickled)
    assert dask.base.tokenize(copy) == dask.base.tokenize(wrapper)
    np.testing.assert_array_equal(copy[1000:2000, :], X[1000:2000])
    assert read_ahead.pending() == 0  # the window dropped what it had not taken


def test_reads_ahead_overlap_on_threads_each_chunk_read_once(s3):
    X, _ = mixture_data(4000, 3, 3, seed=1)
    chunks = write_rows(s3, "rows.zarr", X, 250)
    array = as_row_chunked(s3.url("rows.zarr"), 250, s3.storage_options)
    expected = one_pass(as_row_chunked(X, 250))
    s3.proxy.latency = LATENCY
    for threads in (1, 2):
        s3.proxy.clear()
        with dask.config.set(num_workers=threads):
            blocks = one_pass(array)
        np.testing.assert_array_equal(blocks, expected)  # the same sums, to the bit
        reads = [r for r in s3.proxy.requests("GET") if r.path in chunks]
        assert Counter(r.path for r in reads) == Counter(chunks)  # each chunk once
        # the thread's own read and DEPTH reads ahead at a time (one thread computing)
        assert most_in_flight(reads) >= read_ahead.DEPTH
        assert read_ahead.pending() == 0


def test_depth_and_concurrency_come_from_dask_config(s3):
    X = np.random.default_rng(2).normal(size=(2000, 2))
    chunks = write_rows(s3, "c.zarr", X, 250)
    s3.proxy.latency = LATENCY / 2
    for depth, concurrency, most in ((0, 4, 1), (2, 4, 3), (4, 1, 2)):
        with dask.config.set(
            {"diaggmm.read-ahead.depth": depth, "diaggmm.read-ahead.concurrency": concurrency}
        ):
            array = as_row_chunked(s3.url("c.zarr"), 250, s3.storage_options)
        s3.proxy.clear()
        with dask.config.set(num_workers=1):  # read on the client's settings, not these
            one_pass(array)
        reads = [r for r in s3.proxy.requests("GET") if r.path in chunks]
        assert Counter(r.path for r in reads) == Counter(chunks)
        assert most_in_flight(reads) == most, (depth, concurrency)


def test_on_a_cluster_reads_ahead_stay_in_each_task_and_the_fit_is_the_numpy_fit(s3, local_cluster):
    X, _ = mixture_data(8000, 3, 3, seed=4)
    chunks = write_rows(s3, "fit.zarr", X, 500)
    settings = {"n_components": 3, "random_state": 0, "tol": 0, "max_iter": 3, "chunk_size": 500}
    where = location(s3.url("fit.zarr"), s3.storage_options)
    with Client(local_cluster) as client:
        # the workers know no endpoint: the options travel with the tasks
        assert not any(
            client.run(lambda: any(n in os.environ for n in ENDPOINT_VARIABLES)).values()
        )
        reference = DiagGMM(**settings).fit(X)
        remote = DiagGMM(**settings).fit(where)
        for name in ("weights_", "means_", "covariances_", "lower_bound_"):
            np.testing.assert_array_equal(getattr(remote, name), getattr(reference, name))

        # Parquet row groups too: the file system, with its options, travels with the tasks
        with s3.filesystem().open(s3.url("t.parquet"), "wb") as out:
            pd.DataFrame(X).to_parquet(out, row_group_size=500)
        table = as_samples(s3.url("t.parquet"), storage_options=s3.storage_options).array
        np.testing.assert_array_equal(one_pass(table), one_pass(as_row_chunked(X, 500)))

        array = as_row_chunked(where, 500)
        s3.proxy.latency = LATENCY
        s3.proxy.clear()
        np.testing.assert_array_equal(one_pass(array), one_pass(as_row_chunked(X, 500)))
    reads = [r for r in s3.proxy.requests("GET") if r.path in chunks]
    # no worker read a chunk of another's task: each chunk once in the pass
    assert Counter(r.path for r in reads) == Counter(chunks)
    # 16 chunks in tasks of 8, 4, 2, 1, 1: within the first, reads overlapped
    assert most_in_flight(reads) >= read_ahead.DEPTH


def test_parquet_row_groups_on_s3_are_read_ahead(s3):
    rng = np.random.default_rng(8)
    table = pd.DataFrame(rng.normal(size=(2000, 3)), columns=["u", "v", "w"])
    with s3.filesystem().open(s3.url("t.parquet"), "wb") as out:
        table.to_parquet(out, row_group_size=250)
    samples = as_samples(s3.url("t.parquet"), storage_options=s3.storage_options)
    assert samples.array.chunks[0] == (250,) * 8
    expected = one_pass(as_row_chunked(table.to_numpy(), 250))
    s3.proxy.latency = LATENCY
    s3.proxy.clear()
    with dask.config.set(num_workers=1):
        np.testing.assert_array_equal(one_pass(samples.array), expected)
    gets = s3.proxy.requests("GET", "t.parquet")
    assert most_in_flight(gets) >= 2  # row groups read while another was computed on
    assert read_ahead.pending() == 0


def early_starts(reads, chunks, sizes, runs):
    """Group tasks whose first chunk was requested well before (a quarter of the latency) the
    reads of the group that ran just before on the same worker had all finished (so while that
    group was computing).

    ``runs`` gives, for each worker, its group tasks in the order they ran.
    """
    group_of = [g for g, size in enumerate(sizes) for _ in range(size)]
    first_read, last_finish = {}, {}
    for read in reads:
        index = chunks.index(read.path)
        group = group_of[index]
        last_finish[group] = max(last_finish.get(group, 0.0), read.finished)
        if index == sum(sizes[:group]):
            first_read[group] = read.started
    return [
        group
        for groups in runs
        for before, group in zip(groups, groups[1:])
        if first_read[group] < last_finish[before] - LATENCY / 4
    ]


def without_hand_over():
    """On a worker: group tasks read ahead only their own chunks (as before the hand-over)."""
    cluster.original_read_next_group = cluster.read_next_group
    cluster.read_next_group = lambda *args: None


def with_hand_over():
    """On a worker: undo :func:`without_hand_over`."""
    cluster.read_next_group = getattr(cluster, "original_read_next_group", cluster.read_next_group)


def test_on_a_cluster_the_next_group_task_is_read_while_a_group_computes(s3, local_cluster):
    from distributed import get_task_stream

    from diaggmm_dist.engine.cluster import group_sizes

    X, _ = mixture_data(32 * 50, 3, 3, seed=6)
    chunks = write_rows(s3, "next.zarr", X, 50)
    array = as_row_chunked(location(s3.url("next.zarr"), s3.storage_options), 50)
    sizes = group_sizes(len(chunks), 2)  # 8, 8, 8, 4, 2, 1, 1: several group tasks per worker
    s3.proxy.latency = LATENCY
    early = {}
    with Client(local_cluster) as client:
        expected = one_pass(as_row_chunked(X, 50))  # the same pass on the rows in memory
        for hand_over in (False, True):
            if not hand_over:  # the workers' group tasks read only their own chunks
                client.run(without_hand_over)
            s3.proxy.clear()
            with get_task_stream(client) as stream:
                blocks = one_pass(array)
            client.run(with_hand_over)
            pending = client.run(lambda: (read_ahead.pending(), read_ahead.handed_over()))
            np.testing.assert_array_equal(blocks, expected)  # the same sums, to the bit
            reads = [r for r in s3.proxy.requests("GET") if r.path in chunks]
            counts = Counter(r.path for r in reads)
            assert set(counts) == set(chunks)  # every chunk read
            twice = sorted(path for path, count in counts.items() if count > 1)
            if hand_over:
                # a handed-over task that the scheduler then moved to the other worker (work
                # stealing at the pass's end) wastes at most `depth` reads: its chunks are read
                # again where it runs (engine.cluster.read_next_group)
                assert all(counts[path] == 2 for path in twice), counts
                assert len(twice) <= read_ahead.settings()[0], twice
            else:
                assert twice == []  # each group task reads its own chunks, once
            assert set(pending.values()) == {(0, 0)}  # nothing left read ahead in the workers
            groups = sorted(
                (task["startstops"][-1]["start"], task["worker"], task["key"][1])
                for task in stream.data
                if str(task["key"][0]).startswith("diaggmm-pass-chunks-")
            )
            assert sorted(group for _, _, group in groups) == list(range(len(sizes)))
            runs = [
                [g for _, w, g in groups if w == worker] for worker in {w for _, w, _ in groups}
            ]
            early[hand_over] = early_starts(reads, chunks, sizes, runs)
    assert early[False] == []  # each group task's reads began when it started
    assert early[True], "no group task's first chunk was read while the one before it computed"


def test_reads_handed_over_are_taken_once_or_dropped(s3):
    X = np.random.default_rng(9).normal(size=(2000, 2))
    chunks = write_rows(s3, "h.zarr", X, 250)
    store = location(s3.url("h.zarr"), s3.storage_options).zarr_store()
    wrapper = read_ahead.ReadAhead(zarr.open_array(store), (250,) * 8, "h.zarr", depth=4)
    s3.proxy.clear()
    read_ahead.hand_over([wrapper], [4, 5, 6, 7, 8])  # chunk 8 is past the end
    assert (read_ahead.pending(), read_ahead.handed_over()) == (4, 4)
    with read_ahead.window(4):  # a task of chunks 4..7 takes them: nothing read twice
        for index in range(4, 8):
            np.testing.assert_array_equal(
                wrapper[index * 250 : index * 250 + 250, :], X[index * 250 :][:250]
            )
    assert (read_ahead.pending(), read_ahead.handed_over()) == (0, 0)
    gets = [r.path for r in s3.proxy.requests("GET") if r.path in chunks]
    assert Counter(gets) == Counter(chunks[4:])

    # a task that ran elsewhere leaves its reads: the next hand-over drops them
    read_ahead.hand_over([wrapper], [0, 1])
    assert read_ahead.pending() == 2
    read_ahead.hand_over([wrapper], [2], keep=frozenset({1}))  # 0 dropped, 1 kept, 2 started
    assert (read_ahead.pending(), read_ahead.handed_over()) == (2, 2)
    read_ahead.hand_over([wrapper], [])
    assert (read_ahead.pending(), read_ahead.handed_over()) == (0, 0)
