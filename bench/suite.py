"""``make bench``: every benchmark of the project in one run, and one table of every target.

Runs, one after the other and each in a fresh process (so that its peak memory and its
timings are its own):

=====================  ==================================================================
``run.py``             in-memory speed vs scikit-learn, and the fraction of the roofline
``overheads.py``       time outside chunk compute with 1,000 chunks
``out_of_core.py``     per-row time from a compressed Zarr store on disk; peak memory
``scaling.py``         1 vs 2 single-threaded workers; the per-chunk figures of the
                       cluster cost estimate
``flow_overhead.py``   the Prefect train flow against the plain library fit
``many_models.py``     n_init=8 vs 1 per iteration from a Zarr store (issue 6)
``init_quality.py``    the default initialization's mean final lower bound over 10 seeds
                       vs scikit-learn's, on COADS and the turbidity pixels (issue 19)
``object_store.py``    fits reading from a local S3-compatible server: overlap of reads and
                       compute, n_init=8 vs 1, vs a local store, requests (issue 21)
``object_store_clients.py``  s3fs vs obstore reading the same Zarr array: requests, CPU
                       per GiB, throughput (issue 21, item 5)
``startup.py``         ``diaggmm --help`` and a usage error, now and with the eager imports
                       of before (issue 23)
``tls_cost.py``        the library's LocalCluster with TLS (its default) vs without: per
                       iteration, CPU, per tiny task, start (issue 22)
=====================  ==================================================================

then writes ``bench/results/latest.json`` (every script's own JSON, and one row per target:
what was measured, the threshold, pass / falls short) and ``bench/results/latest.md`` (the
same as Markdown, followed by each script's own report). A script that fails is reported
as such; the others still run.

    python bench/suite.py            # the issues' sizes: 25-30 min on the 2-core VM (stores and
                                     # init_quality.py's scikit-learn fits cached; those take
                                     # 40-90 min more the first time)
    python bench/suite.py --quick    # small sizes, a few minutes: checks the machinery only
                                     # (its results go to bench/results/quick/)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import RESULTS, HostLoad, machine_info, machine_line  # noqa: E402

#: Where ``--quick`` runs leave their results (bench/results keeps the last full run's).
QUICK = RESULTS / "quick"

#: (script, its JSON under bench/results, arguments at full size, arguments with --quick)
SCRIPTS = [
    ("run.py", "speed.json", [], ["--quick", "--repeats", "1", "--iters", "5"]),
    (
        "overheads.py",
        "overheads.json",
        [],
        ["--chunks", "100", "--chunk-rows", "8192", "--iters", "3"],
    ),
    (
        "out_of_core.py",
        "out_of_core.json",
        [],
        ["--rows", "2000000", "--iters", "2", "--out", "out_of_core.json"],
    ),
    ("scaling.py", "scaling.json", [], ["--rows", "2000000", "--iters", "2"]),
    (
        "flow_overhead.py",
        "flow_overhead.json",
        [],
        ["--rows", "1000000", "--out", str(RESULTS / "flow_overhead.json")],
    ),
    ("many_models.py", "many_models.json", [], ["--rows", "1000000", "--iters", "3"]),
    ("init_quality.py", "init_quality.json", [], ["--quick"]),
    ("object_store.py", "object_store.json", [], ["--quick"]),
    ("object_store_clients.py", "object_store_clients.json", [], ["--quick"]),
    ("tls_cost.py", "tls_cost.json", [], ["--quick"]),
    ("startup.py", "startup.json", [], ["--quick"]),
]


def _row(issue, target, measured, threshold, passed, source):
    return {
        "issue": issue,
        "target": target,
        "measured": measured,
        "threshold": threshold,
        "verdict": "not measured" if passed is None else ("pass" if passed else "falls short"),
        "source": source,
    }


def target_rows(results):
    """One row per target of issues 5, 6 and 19, from the scripts' JSON (missing ones: not
    measured).
    """
    rows = []
    speed = results.get("speed.json")
    if speed:
        by_dtype = {row["dtype"]: row for row in speed["rows"] if row.get("target")}
        for dtype in ("float32", "float64"):
            row = by_dtype[dtype]
            rows.append(
                _row(
                    5,
                    f"1. DiagGMM {dtype} vs scikit-learn, per iteration "
                    f"(N={speed['config']['n']:,})",
                    f"{row['speedup']:.2f}x",
                    f">= {row['target']:.0f}x",
                    row["met_target"],
                    "run.py",
                )
            )
            tolerance = 1e-4 if dtype == "float32" else 1e-8
            rows.append(
                _row(
                    5,
                    f"1. final lower bound {dtype}, relative to scikit-learn's",
                    f"{row['lb_rel_diff']:.1e}",
                    f"<= {tolerance:.0e}",
                    row["lb_rel_diff"] <= tolerance,
                    "run.py",
                )
            )
        row = by_dtype["float32"]
        rows.append(
            _row(
                5,
                "2. DiagGMM float32 as a fraction of the machine's bound (bound s / our s)",
                f"{row['paired_bound_over_ours']:.0%} (median over repeats, the bound measured "
                "right after each fit; the run's best bound against the best fit: "
                f"{row['bound_over_ours']:.0%}; the library's kernel alone, no dask: "
                f"{speed['roofline']['plain_kernel_of_bound']:.0%})",
                f">= {row['roofline_target']:.0%}",
                row["met_roofline_target"],
                "run.py",
            )
        )
    overheads = results.get("overheads.json")
    if overheads:
        for run in overheads["runs"]:
            if run["default_size"]:
                rows.append(
                    _row(
                        5,
                        f"4. time outside chunk compute, {run['chunks']:,} chunks of "
                        f"{run['chunk_rows']:,} rows",
                        f"{run['outside_fraction']:.1%}",
                        "< 5%",
                        run["outside_fraction"] < 0.05,
                        "overheads.py",
                    )
                )
    flow = results.get("flow_overhead.json")
    if flow and "per_iteration_extra_cpu_seconds" not in flow:
        flow = None  # written by an older flow_overhead.py: rerun it
    if flow:
        extra_cpu = flow["per_iteration_extra_cpu_seconds"]
        rows.append(
            _row(
                5,
                f"4. train flow overhead per iteration vs the plain fit (N={flow['rows']:,}; slope "
                f"over runs of {flow['short_iterations']} and {flow['iterations']} iterations)",
                f"{flow['per_iteration_overhead_percent']:+.2f}% outside the EM passes (passes "
                f"{flow['pass_time_ratio']:.3f}x the plain fit's; CPU added per iteration outside "
                "the workers "
                f"{(extra_cpu['this process'] + extra_cpu['other processes']) * 1000:+.0f} ms); "
                f"fixed {flow['fixed_overhead_seconds']:.1f} s per run",
                f"< {flow['target_percent']:g}%",
                flow["per_iteration_overhead_percent"] < flow["target_percent"],
                "flow_overhead.py",
            )
        )
    rows += out_of_core_rows(results.get("out_of_core.json"))
    rows += init_quality_rows(results.get("init_quality.json"))
    rows += object_store_rows(results.get("object_store.json"))
    rows += scaling_rows(results.get("scaling.json"))
    startup = results.get("startup.json")
    if startup:
        rows.append(
            _row(
                23,
                "1. `diaggmm --help` and a usage error, median wall seconds of a fresh process",
                f"{startup['slowest_median_seconds']:.2f} s",
                f"< {startup['target_seconds']} s",
                startup["passed"],
                "startup.py",
            )
        )
    many = results.get("many_models.json")
    if many:
        for cache in ("cold", "warm"):
            if cache in many:
                reads = "from disk" if cache == "cold" else "from the page cache"
                rows.append(
                    _row(
                        6,
                        f"n_init=8 vs n_init=1 per iteration, Zarr store read {reads} "
                        f"(N={many['rows']:,})",
                        f"{many[cache]['ratio']:.2f}x"
                        + (
                            " (R=1 plus the arithmetic R=8 adds in memory: "
                            f"{many[cache]['no_overlap_estimate']:.2f}x)"
                            if "no_overlap_estimate" in many[cache]
                            else ""
                        ),
                        f"<= {many['target']}x",
                        many[cache]["passed"],
                        "many_models.py",
                    )
                )
    return rows


def object_store_rows(result):
    """Issue 21's benchmark: targets (a)-(c) and the request counts of (d)."""
    if not result or "ratios" not in result:
        return []
    ratios, passed, targets = result["ratios"], result["passed"], result["targets"]
    n = f"N={result['rows']:,}, {result['chunks']} chunks"
    rows = [
        _row(
            21,
            f"(a) per iteration from S3 at 50 ms + 400 MB/s vs max(reading alone, in memory) ({n})",
            f"{ratios['a']:.2f}x ({result['read_ahead']})",
            f"<= {targets['a']}x",
            passed["a"],
            "object_store.py",
        ),
        _row(
            21,
            "(b) n_init=8 vs n_init=1 per iteration from S3 at 50 ms + 400 MB/s",
            f"{ratios['b']:.2f}x",
            f"<= {targets['b']}x",
            passed["b"],
            "object_store.py",
        ),
        _row(
            21,
            "(c) per iteration from S3 (no latency, no cap) vs the local Zarr store",
            f"{ratios['c']:.2f}x",
            f"<= {targets['c']}x",
            passed["c"],
            "object_store.py",
        ),
    ]
    gets = result["requests"]["fast_r1"]["median"]["chunk_gets"]
    all_requests = result["requests"]["fast_r1"]["median"]["all"]
    rows.append(
        _row(
            21,
            "(d) requests per iteration (chunk GETs / all) against the chunks read",
            f"{gets:.0f} / {all_requests:.0f}",
            f"= {result['chunks']}",
            all_requests == result["chunks"],
            "object_store.py",
        )
    )
    checkpointed = result["requests"].get("checkpointed")
    rows.append(
        _row(
            21,
            "(d) requests per checkpoint step",
            f"{checkpointed['median']['checkpoint']:.0f}"
            if checkpointed
            else f"not measured: {result.get('checkpoint_error')}",
            "<= 8",
            checkpointed["median"]["checkpoint"] <= 8 if checkpointed else None,
            "object_store.py",
        )
    )
    return rows


def init_quality_rows(result):
    """One row per data set and K of ``init_quality.py``: the mean lower bound's gap to
    scikit-learn's.
    """
    rows = []
    for row in (result or {}).get("rows", []):
        rows.append(
            _row(
                19,
                f"§4 default init, mean final lower bound over {len(row['seeds'])} seeds vs "
                f"scikit-learn's, {row['data']} ({row['rows']:,} x {row['features']}), "
                f"K={row['k']}",
                f"{row['gap']:+.4f} nats/row (positive: ours worse; init "
                f"{row['init_passes_mean']:.1f} data passes)",
                f"<= {result['target']}",
                row["passed"],
                "init_quality.py",
            )
        )
    return rows


def out_of_core_rows(result):
    verdict = (result or {}).get("verdict")
    if not verdict:
        return []
    n = f"N={verdict['rows']:,}, {verdict['scheduler']}"
    return [
        _row(
            5,
            f"3. per-row iteration time, compressed Zarr on disk vs in memory at 1M ({n})",
            f"{verdict['disk_over_memory']:.2f}x (against the in-memory fits right before and "
            "after it"
            + (
                f"; against the fastest of them {verdict['disk_over_fastest_memory']:.2f}x"
                if verdict.get("disk_over_fastest_memory")
                else ""
            )
            + ")"
            + (
                " (the kernel alone, reading the store vs in memory: "
                f"{verdict['kernel_alone']:.2f}x; from an uncompressed store "
                f"{verdict['uncompressed_kernel_alone']:.2f}x)"
                if verdict.get("kernel_alone") and verdict.get("uncompressed_kernel_alone")
                else ""
            ),
            "<= 1.3x",
            verdict["ratio_pass"],
            "out_of_core.py",
        ),
        _row(
            5,
            f"3. peak resident memory (PSS) of the process tree ({verdict['scheduler']}), and its "
            "spread over N",
            f"{verdict['peak_rss_bytes'] / 2**30:.2f} GiB, max/min "
            f"{verdict['rss_max_over_min_across_n']:.2f}",
            "< 2 GiB, flat",
            verdict["rss_pass"] and verdict["rss_flat"],
            "out_of_core.py",
        ),
    ]


def scaling_rows(result):
    if not result:
        return []
    speedup = result.get("speedup", {})
    if not speedup:
        return []
    ceiling = result.get("ceiling")
    measured = f"{speedup['speedup']:.2f}x (median over repeats of paired 1-worker / 2-worker fits"
    if (
        "speedup_best" in speedup
    ):  # results written before the paired verdict have only the best-against-best figure
        measured += f"; best against best {speedup['speedup_best']:.2f}x"
    measured += (
        f"; the same work in 2 plain processes vs 1: {ceiling['speedup']:.2f}x)" if ceiling else ")"
    )
    return [
        _row(
            5,
            "5. LocalCluster, 2 single-threaded workers vs 1 (same data)",
            measured,
            f">= {speedup.get('target', 1.8)}x",
            speedup["speedup"] >= speedup.get("target", 1.8),
            "scaling.py",
        )
    ]


def host_load_text(status):
    """What else used the machine's CPUs while a script ran (see :class:`_common.HostLoad`)."""
    load = status.get("host_load")
    if not load:
        return "CPU outside it not measured"
    return (
        f"outside it {load['outside_core_seconds']:.1f} core-s ({load['outside_share']:.0%} of the "
        f"CPUs), steal {load['steal_core_seconds']:.1f} core-s ({load['steal_share']:.0%}) over "
        f"{load['seconds']:.0f} s"
    )


def render(report, folder=RESULTS):
    lines = [
        f"# diaggmm-dist benchmarks ({report['machine']['date']})",
        "",
        f"Machine: {machine_line(report['machine'])}",
        "",
        f"Command: `{report['command']}` ({report['seconds'] / 60:.0f} min)",
        "",
        "| issue | target | measured | threshold | verdict | script |",
        "|---|---|---|---|---|---|",
    ]
    for row in report["targets"]:
        lines.append(
            f"| {row['issue']} | {row['target']} | {row['measured']} | {row['threshold']} | "
            f"{row['verdict']} | `bench/{row['source']}` |"
        )
    for script, status in report["scripts"].items():
        if status.get("rerun") is False:
            lines.append(
                f"\n> `bench/{script}`: figures of an earlier run (this command did not rerun it), "
                f"from bench/results/ as they were."
            )
        if status["returncode"] != 0:
            lines.append(
                f"\n> `bench/{script}` failed (exit {status['returncode']}): its targets are not "
                f"measured; see bench/results/{script}.log"
            )
    loads = [
        f"* `bench/{script}`: {host_load_text(status)}"
        for script, status in report["scripts"].items()
        if status.get("rerun") is not False
    ]
    if loads:
        lines += [
            "",
            "CPU used outside each benchmark while it ran (other processes and kernel threads, "
            "from `/proc/stat` less the benchmark's own processes; steal: the host keeping the "
            "VM's CPUs). A large share here means that script's figures are pessimistic:",
            "",
            *loads,
        ]
    for name, result in report["results"].items():
        text = result.get("markdown") if isinstance(result, dict) else None
        if text:
            lines += ["", f"## {name}", "", text]
    speed_md = folder / "speed.md" if (folder / "speed.md").exists() else RESULTS / "speed.md"
    if "speed.json" in report["results"] and speed_md.exists():
        lines += ["", "## speed.json", "", speed_md.read_text()]
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="small sizes: checks that everything runs"
    )
    parser.add_argument(
        "--only",
        nargs="+",
        metavar="SCRIPT",
        help="rerun only these scripts (e.g. run.py); the others' latest results are reported as "
        "they are",
    )
    parser.add_argument(
        "--report",
        action="store_true",
        help="rerun nothing: rebuild latest.{json,md} from every script's latest results",
    )
    args = parser.parse_args(argv)
    RESULTS.mkdir(parents=True, exist_ok=True)
    # a quick run must not replace the last full run's figures: the scripts write where they
    # always do, and their outputs are moved to QUICK afterwards and the full run's put back
    full_run = {path: path.read_bytes() for path in _outputs()} if args.quick else {}
    try:
        report = _run(args)
    finally:
        if args.quick:
            QUICK.mkdir(exist_ok=True)
            for path in _outputs():
                if full_run.get(path) != path.read_bytes():  # written by this run
                    path.replace(QUICK / path.name)
            for path, data in full_run.items():
                path.write_bytes(data)
    folder = QUICK if args.quick else RESULTS
    (folder / "latest.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    markdown = render(report, folder)
    (folder / "latest.md").write_text(markdown)
    print(markdown)
    return 0 if all(status["returncode"] == 0 for status in report["scripts"].values()) else 1


def _outputs():
    """The files the scripts write under bench/results (their JSON, ``speed.md`` and their logs)."""
    names = (
        {output for _, output, _, _ in SCRIPTS}
        | {"speed.md"}
        | {f"{script}.log" for script, *_ in SCRIPTS}
    )
    return [RESULTS / name for name in sorted(names) if (RESULTS / name).exists()]


def _run(args):
    """Run the scripts ``args`` asks for; the suite's report (every script's results and the
    targets).
    """
    started = time.perf_counter()
    info = machine_info()
    statuses, results = {}, {}
    for script, output, full, quick in SCRIPTS:
        if args.report or (args.only and script not in args.only):
            # not rerun: its latest figures (if any) still go into the table, marked as such
            if (RESULTS / output).exists():
                results[output] = json.loads((RESULTS / output).read_text())
                statuses[script] = {
                    "returncode": 0,
                    "seconds": 0.0,
                    "command": None,
                    "rerun": False,
                }
            continue
        (RESULTS / output).unlink(missing_ok=True)  # never report an old run's figures
        command = [sys.executable, str(HERE / script), *(quick if args.quick else full)]
        print(f"suite: {' '.join(command[1:])}", flush=True)
        t0, host = time.perf_counter(), HostLoad()
        with open(RESULTS / f"{script}.log", "w") as log:
            code = subprocess.run(
                command, stdout=log, stderr=subprocess.STDOUT, cwd=HERE.parent
            ).returncode
        statuses[script] = {
            "returncode": code,
            "seconds": time.perf_counter() - t0,
            "command": command[1:],
            "host_load": host.stop(),
        }
        print(
            f"suite: {script} exit {code} in {statuses[script]['seconds']:.0f} s; "
            f"{host_load_text(statuses[script])}",
            flush=True,
        )
        if code == 0 and (RESULTS / output).exists():
            results[output] = json.loads((RESULTS / output).read_text())
    return {
        "machine": info,
        "command": "python bench/suite.py"
        + (" --quick" if args.quick else "")
        + (" --report" if args.report else ""),
        "quick": args.quick,
        "seconds": time.perf_counter() - started,
        "scripts": statuses,
        "targets": target_rows(results),
        "results": results,
    }


if __name__ == "__main__":
    sys.exit(main())
