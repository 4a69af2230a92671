"""Fit a diaggmm-dist model on a SLURM cluster, with Dask workers started as SLURM jobs.

Run this on a login node (or inside a small, long-walltime batch job) of a cluster whose
compute nodes see the same filesystem as this node: the virtualenv holding diaggmm-dist, the
Zarr data and the model directory. The Dask scheduler runs inside this process; each worker is
an ``sbatch`` job, made by dask-jobqueue's ``SLURMCluster``, that connects back to it.

    pip install dask-jobqueue          # into the same virtualenv as diaggmm-dist
    python deploy/slurm/jobqueue_cluster.py /shared/features.zarr/X --k 16 \\
        --out /shared/models/features-k16 --checkpoint /shared/ckpt/features-k16 \\
        --jobs 4 --queue compute --account myproject --cores 8 --memory 32GB --walltime 04:00:00

By default the fit is the ``diaggmm fit`` console script pointed at the cluster with
``--scheduler``; ``--via flow`` calls the Prefect ``train`` flow (flows/train.py) with
``scheduler_address`` instead, so the run is recorded by the Prefect API named by
PREFECT_API_URL (without it, Prefect uses a temporary local API). ``--dry-run`` prints the
job script that would be submitted and exits, without submitting anything.

Worker jobs that reach their walltime are killed; with ``--checkpoint`` a fit that did not
finish is resumed from its last iteration by running the same command again.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def arguments(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", help="Zarr array path/URL readable from every compute node")
    parser.add_argument("--k", type=int, required=True, help="number of mixture components")
    parser.add_argument(
        "--out", required=True, help="model path/URL (shared filesystem or object store)"
    )
    parser.add_argument(
        "--checkpoint", default=None, help="checkpoint path/URL, to resume a killed fit"
    )
    parser.add_argument("--max-iter", type=int, default=100)
    parser.add_argument(
        "--via",
        choices=["cli", "flow"],
        default="cli",
        help="run `diaggmm fit` (cli) or the Prefect train flow (flow)",
    )
    # SLURM job shape: one job = one node share running `processes` Dask workers.
    parser.add_argument("--jobs", type=int, default=2, help="number of SLURM worker jobs")
    parser.add_argument("--queue", default=None, help="SLURM partition (#SBATCH -p)")
    parser.add_argument("--account", default=None, help="SLURM account (#SBATCH -A)")
    parser.add_argument("--cores", type=int, default=8, help="cores per job")
    parser.add_argument("--processes", type=int, default=2, help="Dask worker processes per job")
    parser.add_argument("--memory", default="32GB", help="memory per job")
    parser.add_argument("--walltime", default="04:00:00")
    parser.add_argument(
        "--interface",
        default=None,
        help="network interface the workers and scheduler talk over, e.g. ib0",
    )
    parser.add_argument(
        "--local-directory",
        default=None,
        help="node-local scratch for worker spill files, e.g. '$TMPDIR'",
    )
    parser.add_argument("--log-directory", default="slurm-logs")
    parser.add_argument(
        "--wait-timeout",
        type=float,
        default=3600,
        help="seconds to wait for the first worker to start (queue time)",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="print the worker job script and exit"
    )
    return parser.parse_args(argv)


def make_cluster(args):
    from dask_jobqueue import SLURMCluster

    return SLURMCluster(
        queue=args.queue,
        account=args.account,
        cores=args.cores,
        processes=args.processes,
        memory=args.memory,
        walltime=args.walltime,
        interface=args.interface,
        local_directory=args.local_directory,
        log_directory=args.log_directory,
        job_name="diaggmm-worker",
        python=sys.executable,  # the virtualenv's Python, on the shared filesystem
    )


def fit_with_cli(args, scheduler_address):
    command = [
        "diaggmm",
        "fit",
        args.data,
        "--k",
        str(args.k),
        "--out",
        args.out,
        "--max-iter",
        str(args.max_iter),
        "--scheduler",
        scheduler_address,
    ]
    if args.checkpoint:
        command += ["--checkpoint", args.checkpoint]
    # The console script lives next to this virtualenv's python.
    env = dict(
        os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    )
    subprocess.run(command, check=True, env=env)


def fit_with_flow(args, scheduler_address):
    from prefect.flows import load_flow_from_entrypoint

    train = load_flow_from_entrypoint(f"{REPO / 'flows' / 'train.py'}:train")
    train(
        data_url=args.data,
        n_components=args.k,
        model_url=args.out,
        checkpoint_url=args.checkpoint,
        max_iter=args.max_iter,
        scheduler_address=scheduler_address,
    )


def main(argv=None):
    args = arguments(argv)
    with make_cluster(args) as cluster:
        if args.dry_run:
            print(cluster.job_script())
            return 0
        cluster.scale(jobs=args.jobs)
        from distributed import Client

        with Client(cluster) as client:
            print(
                f"scheduler {cluster.scheduler_address}; waiting for workers "
                f"(dashboard: {cluster.dashboard_link})",
                flush=True,
            )
            client.wait_for_workers(1, timeout=args.wait_timeout)
            # The fit itself is a separate client of the same scheduler.
            if args.via == "cli":
                fit_with_cli(args, cluster.scheduler_address)
            else:
                fit_with_flow(args, cluster.scheduler_address)
    return 0


if __name__ == "__main__":
    sys.exit(main())
