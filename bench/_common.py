"""Helpers shared by the out-of-core benchmarks (``codecs.py``, ``out_of_core.py``, ``scaling.py``).

Machine information, the peak resident memory of a process tree, the page cache, and the
cache of synthetic mixture stores under ``bench/results/data/`` (written once, reused).
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import itertools
import json
import logging
import os
import platform
import statistics
import subprocess
import threading
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
DATA = RESULTS / "data"

#: The data every out-of-core benchmark uses: K=16 components, D=32 features, float32.
D, K = 32, 16


def _version(package):
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine_info():
    """CPU model, cores, RAM, disk, load, Python and library versions."""
    model, cores, physical = None, set(), None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = (part.strip() for part in line.partition(":"))
            if key == "model name" and model is None:
                model = value
            elif key == "physical id":
                physical = value
            elif key == "core id":
                cores.add((physical, value))
    except OSError:
        pass
    meminfo = _meminfo()
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    free = os.statvfs(str(ROOT))
    return {
        "date": _dt.datetime.now().isoformat(timespec="seconds"),
        "cpu_model": model or platform.processor() or platform.machine(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "physical_cores": len(cores) or None,
        "ram_gib": round(meminfo.get("MemTotal", 0) / 2**30, 1),
        "disk_free_gib": round(free.f_bavail * free.f_frsize / 2**30, 1),
        "load_average_at_start": load,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": {
            name: _version(name)
            for name in (
                "numpy",
                "numba",
                "dask",
                "distributed",
                "zarr",
                "numcodecs",
                "scikit-learn",
                "prefect",
                "diaggmm-dist",
            )
        },
        "blas": _blas(),
    }


class HostLoad:
    """CPU the rest of the machine used while a benchmark ran, from ``/proc/stat`` and
    ``getrusage``.

    On a shared VM the figures move with whatever else runs (other processes, the host taking
    the CPUs: "steal"). Started before a benchmark's process and stopped after it has been
    waited for, so that its CPU and its reaped descendants' (workers, helpers) are in
    ``RUSAGE_CHILDREN``; the machine's busy time beyond that, and beyond this process's own,
    is what ran outside the benchmark (other processes, and kernel threads such as the page
    cache's writeback). Both as core-seconds and as a share of the machine's CPUs over the
    wall time.
    """

    def __init__(self):
        self.started = time.perf_counter()
        self.ticks = _cpu_ticks()
        self.ours = _rusage_seconds()

    def stop(self):
        """``{"seconds", "outside_core_seconds", "outside_share", "steal_core_seconds",
        "steal_share"}`` (None off Linux).
        """
        ticks, wall = _cpu_ticks(), time.perf_counter() - self.started
        if ticks is None or self.ticks is None or wall <= 0:
            return None
        hertz, cpus = os.sysconf("SC_CLK_TCK"), os.cpu_count() or 1
        busy = (ticks["busy"] - self.ticks["busy"]) / hertz
        steal = (ticks["steal"] - self.ticks["steal"]) / hertz
        outside = max(0.0, busy - (_rusage_seconds() - self.ours))
        return {
            "seconds": wall,
            "outside_core_seconds": outside,
            "outside_share": outside / (wall * cpus),
            "steal_core_seconds": steal,
            "steal_share": steal / (wall * cpus),
        }


def _cpu_ticks():
    """The machine's busy and stolen CPU time in clock ticks since boot (``/proc/stat``), or
    None.
    """
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return {"busy": user + nice + system + irq + softirq, "steal": steal}


def _rusage_seconds():
    """CPU seconds of this process and of its waited-for descendants."""
    import resource

    return sum(
        r.ru_utime + r.ru_stime
        for r in (
            resource.getrusage(resource.RUSAGE_SELF),
            resource.getrusage(resource.RUSAGE_CHILDREN),
        )
    )


def _blas():
    """The BLAS libraries loaded (OpenBLAS, MKL...): what they are and how many threads they use."""
    from threadpoolctl import threadpool_info

    return [
        {
            key: lib.get(key)
            for key in ("internal_api", "version", "architecture", "num_threads", "prefix")
        }
        for lib in threadpool_info()
        if lib.get("user_api") == "blas"
    ]


def machine_line(info):
    versions = ", ".join(
        f"{k} {v}" for k, v in info["versions"].items() if v and k != "diaggmm-dist"
    )
    return (
        f"{info['date']}, {info['cpu_model']}, {info['logical_cpus']} logical CPUs "
        f"({info['usable_cpus']} usable), {info['ram_gib']} GiB RAM, Python {info['python']}, "
        f"{versions}; load average at start "
        f"{', '.join(f'{v:.2f}' for v in info['load_average_at_start'] or [])} (a shared machine: "
        "others may be running benchmarks at the same time)"
    )


def _meminfo():
    out = {}
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            key, _, rest = line.partition(":")
            out[key] = int(rest.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return out


def page_cache_bytes():
    """Bytes the kernel holds in the page cache now (``Cached`` in /proc/meminfo)."""
    return _meminfo().get("Cached", 0)


def drop_page_cache():
    """Write back and drop the page cache (root only); True when it was dropped."""
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("1\n")
        return True
    except OSError:
        return False


def _files(path):
    return sorted(f for f in Path(path).rglob("*") if f.is_file())


def cached_fraction(path):
    """Fraction of the bytes of the files under ``path`` that sit in the page cache (via mincore).

    Uses ``fincore`` (util-linux) when present; None when it cannot be measured.
    """
    files = [str(f) for f in _files(path)]
    if not files:
        return None
    try:
        total = cached = 0
        for start in range(0, len(files), 500):
            out = subprocess.run(
                [
                    "fincore",
                    "--bytes",
                    "--noheadings",
                    "--raw",
                    "--output",
                    "RES,SIZE",
                    *files[start : start + 500],
                ],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            for line in out.splitlines():
                res, size = line.split()
                cached += int(res)
                total += int(size)
        return cached / total if total else None
    except (OSError, subprocess.CalledProcessError, ValueError):
        return None


def evict_from_page_cache(path):
    """Ask the kernel to drop the cached pages of the files under ``path`` (``POSIX_FADV_DONTNEED``;
    no root needed).
    """
    for file in _files(path):
        fd = os.open(file, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def read_into_page_cache(path, block=1 << 24):
    """Read every file under ``path`` once, in order, so that the page cache holds it; returns the
    seconds taken.
    """
    buffer = bytearray(block)
    start = time.perf_counter()
    for file in _files(path):
        with open(file, "rb", buffering=0) as handle:
            while handle.readinto(buffer):
                pass
    return time.perf_counter() - start


def bytes_on_disk(path):
    return sum(f.stat().st_size for f in _files(path))


#: How far the summed RSS must top its last high before :class:`PeakMemory` reads the PSS again.
PSS_STEP = 16 * 2**20


class PeakMemory:
    """Peak resident memory of this process and all its descendants, sampled every ``interval`` s.

    Each process counts its proportional set size (PSS: resident pages, those shared between
    processes split among them), so a forked helper that shares its parent's pages until it
    execs is not counted twice, as summed RSS would count it; where PSS cannot be read
    (another OS, no permission) the RSS is used.

    Reading PSS is costly: the kernel walks every page table of the process, ~30 ms of CPU
    for a 1 GiB process tree here, a third of a core at 10 samples a second, taken from the
    fit being measured (with 2 busy workers on 2 cores: 2.13 s per pass against 1.78 s without
    it in one A/B, 2.07 against 2.04 s in another). So
    every sample reads the RSS (~0.1 ms), and the PSS is read only when the summed RSS
    tops the last high at which PSS was read by :data:`PSS_STEP` bytes: private memory moves
    both alike, so the PSS peak is taken there, to within that step.

    ``breakdown`` holds the PSS of each process at the peak (a short name: this process,
    a worker or a nanny, from the command line).
    """

    def __init__(self, interval=0.1):
        self.interval, self.peak, self._stop = interval, 0, threading.Event()
        self.peak_processes, self.breakdown = 0, []

    @staticmethod
    def _name(proc, me):
        if proc.pid == me.pid:
            return "this process"
        try:
            cmdline = " ".join(proc.cmdline())
        except Exception:  # noqa: BLE001 (a process that just ended)
            return "?"
        if "resource_tracker" in cmdline:
            return "multiprocessing resource tracker"
        if "spawn_main" in cmdline:
            return "worker process"
        if cmdline.startswith("fincore"):
            return "fincore"
        return cmdline[:60]

    def _sample(self):
        import psutil

        me, peak_rss = psutil.Process(), 0
        for sample in itertools.count():
            if self._stop.is_set():
                return
            if (
                sample % 10 == 0
            ):  # finding the descendants scans all of /proc: once a second is enough
                procs = [me] + me.children(recursive=True)
            rss = sum(_rss_bytes(proc) for proc in procs)
            if rss > peak_rss + PSS_STEP:  # a new high: now the PSS is worth its cost
                peak_rss, sizes = rss, []
                for proc in procs:
                    try:
                        sizes.append((proc, _resident_bytes(proc)))
                    except psutil.Error:
                        continue
                total = sum(size for _, size in sizes)
                if total > self.peak:
                    self.peak, self.peak_processes = total, len(sizes)
                    self.breakdown = [(self._name(proc, me), size) for proc, size in sizes]
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def cpu_seconds_by_process():
    """CPU seconds (user + system) so far of this process and each kind of its descendants.

    Keys as :class:`PeakMemory` names processes ("this process", "worker process", ...; others
    by their command line). Processes that ended are not counted: take differences over
    stretches in which the same processes live.
    """
    import psutil

    me, totals = psutil.Process(), {}
    for proc in [me] + me.children(recursive=True):
        try:
            times = proc.cpu_times()
        except psutil.Error:
            continue
        name = PeakMemory._name(proc, me)
        totals[name] = totals.get(name, 0.0) + times.user + times.system
    return totals


def _rss_bytes(proc):
    """The process's RSS; 0 for one that has just ended."""
    import psutil

    try:
        return proc.memory_info().rss
    except psutil.Error:
        return 0


def _resident_bytes(proc):
    """The process's PSS where the OS gives it (Linux), else its RSS."""
    try:
        return proc.memory_full_info().pss
    except (AttributeError, PermissionError):
        return proc.memory_info().rss


def codec_tag(compressors, chunk_rows):
    """A short file-name tag of a codec (zarr v3 compressor list or None) and the rows per chunk."""
    if not compressors:
        return f"raw-{chunk_rows}"
    parts = []
    for codec in compressors if isinstance(compressors, (list, tuple)) else [compressors]:
        config = codec.to_dict()
        name, conf = config["name"], config.get("configuration", {})
        if name == "blosc":
            parts.append(f"blosc-{conf['cname']}-{conf['shuffle']}-{conf['clevel']}")
        elif name == "zstd":
            parts.append(f"zstd-{conf['level']}")
        else:
            parts.append(name + "-" + "-".join(str(v) for v in conf.values()))
    return "_".join(parts) + f"-{chunk_rows}"


def mixture_store(rows, *, root=DATA, log=print, compressors="default"):
    """Path of the ``X`` array of a cached ``rows`` x 32 float32 mixture store, written if missing.

    Written with :func:`diaggmm_dist.datasets.synthetic.write_mixture_zarr`'s default chunk rows and
    ``compressors`` (its default codec unless given; None: uncompressed), chunk by chunk with
    bounded memory; the file name carries the codec and chunk rows so a change of the defaults
    never reuses an old store. Same seed -> same values.
    """
    from diaggmm_dist.datasets import synthetic
    from diaggmm_dist.stores.zarr_groups import data_chunk_rows

    if isinstance(compressors, str) and compressors == "default":
        compressors = synthetic.DEFAULT_COMPRESSORS
    tag = codec_tag(compressors, data_chunk_rows(D, 4))
    path = Path(root) / f"mixture-{rows}-{tag}.zarr"
    if not (path / "X" / "zarr.json").exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        log(f"writing {path} ({rows:,} x {D} float32, {rows * D * 4 / 2**30:.1f} GiB raw) ...")
        synthetic.write_mixture_zarr(
            path, rows, *synthetic.mixture_parameters(K, D, seed=0), seed=0, compressors=compressors
        )
        log(f"wrote {path} in {time.perf_counter() - start:.0f} s")
    return path / "X"


def start_values(seed=1):
    """The fixed initial parameters every timed fit starts from (K=16, D=32)."""
    from diaggmm_dist.datasets.synthetic import mixture_parameters

    rng = np.random.default_rng(seed)
    _, means, covariances = mixture_parameters(K, D, seed=0)
    return (
        np.full(K, 1 / K),
        means + rng.normal(0, 1, means.shape),
        np.ones((K, D)) / covariances.mean(),
    )


class IterationLog(logging.Handler):
    """Collects the per-iteration ``seconds`` the library logs.

    After each iteration (outside its timing: the library measures the iteration before it
    logs it) it can drop the page cache (``drop_cache``) and then record ``cache_probe()``,
    e.g. the fraction of the store in the page cache as the next iteration starts.
    """

    def __init__(self, drop_cache=False, cache_probe=None):
        super().__init__(logging.INFO)
        self.seconds, self.cached, self.drop_cache, self.cache_probe = (
            [],
            [],
            drop_cache,
            cache_probe,
        )

    def emit(self, record):
        if hasattr(record, "seconds") and hasattr(record, "iteration"):
            self.seconds.append(float(record.seconds))
            if self.drop_cache:
                drop_page_cache()
            if self.cache_probe is not None:
                self.cached.append(self.cache_probe())


def timed_fit(data, iters, drop_cache=False, cache_probe=None):
    """Fit ``iters`` + 1 iterations of the fixed start on ``data`` (K=16, float32, ``tol=0``).

    Returns a dict: every iteration's seconds as the library logs them, the median of all but
    the first (``seconds_per_iteration``), the whole fit's seconds, the peak RSS of this
    process tree during the fit and the final lower bound. With ``drop_cache`` the page cache
    is dropped before the fit and after every iteration, so every pass reads the disk;
    ``cache_probe()`` is recorded as each timed iteration starts (``cached_at_start``).
    """
    from sklearn.exceptions import ConvergenceWarning

    from diaggmm_dist import DiagGMM

    w0, m0, p0 = start_values()
    gmm = DiagGMM(
        K,
        weights_init=w0,
        means_init=m0,
        precisions_init=p0,
        tol=0,
        max_iter=iters + 1,
        dtype="float32",
    )
    logger = logging.getLogger("diaggmm_dist")
    handler, level = IterationLog(drop_cache, cache_probe), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        if drop_cache:
            drop_page_cache()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            with PeakMemory() as peak:
                start = time.perf_counter()
                gmm.fit(data)
                total = time.perf_counter() - start
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    seconds = handler.seconds
    return {
        "iteration_seconds": seconds,
        "fit_seconds": total,
        "seconds_per_iteration": statistics.median(seconds[1:]) if len(seconds) > 1 else seconds[0],
        "peak_rss_bytes": peak.peak,
        "processes_at_peak": peak.peak_processes,
        "rss_at_peak_by_process": peak.breakdown,
        "cached_at_start": handler.cached[:-1] if cache_probe is not None else None,
        "lower_bound": float(gmm.lower_bound_),
    }


def kernel_pass_seconds(chunks, weights, means, precisions, threads, load=None):
    """Seconds of one statistics pass of the library's per-chunk kernel alone over ``chunks``.

    ``kernels.chunk_statistics`` (float32, the Gaussian model of the given parameters) on each
    of ``chunks``, ``load(chunk)`` first when given (e.g. a slice read from a store), on a pool
    of ``threads`` threads with one BLAS thread each, and nothing else: no dask, no estimator,
    no M-step. The pool is created per pass (a few ms against passes of 0.05 s and more).
    """
    from concurrent.futures import ThreadPoolExecutor

    from threadpoolctl import threadpool_limits

    from diaggmm_dist import kernels
    from diaggmm_dist.kernels import data_center

    coef = kernels.log_prob_coefficients(
        weights, means, precisions, data_center(weights, means, precisions), np.float32
    )
    load = load or (lambda chunk: chunk)
    with threadpool_limits(1, user_api="blas"), ThreadPoolExecutor(threads) as pool:
        start = time.perf_counter()
        list(
            pool.map(
                lambda chunk: kernels.chunk_statistics(load(chunk), ("gaussian", coef)), chunks
            )
        )
        return time.perf_counter() - start


def write_json(name, result):
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / name
    path.write_text(json.dumps(result, indent=2, default=str))
    return path


def verdict(ok):
    return "pass" if ok else "falls short"


def read_pass(reader, selections, n_threads):
    """Seconds to read ``reader[selection]`` once for every selection, ``n_threads`` threads
    taking the next one (the fit's chunks, read and dropped: no EM)."""
    pending, lock = iter(selections), threading.Lock()

    def work():
        while True:
            with lock:
                selection = next(pending, None)
            if selection is None:
                return
            reader[selection]

    threads = [threading.Thread(target=work) for _ in range(n_threads)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - start
