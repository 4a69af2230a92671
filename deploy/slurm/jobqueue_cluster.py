"""Fit a diaggmm-dist model on a SLURM cluster, with Dask workers started as SLURM jobs, over TLS.

Run this on a login node (or inside a small, long-walltime batch job) of a cluster whose
compute nodes see the same filesystem as this node: the virtualenv holding diaggmm-dist, the
Zarr data, the model directory and the credentials directory. The Dask scheduler runs inside
this process; each worker is an ``sbatch`` job, made by dask-jobqueue's ``SLURMCluster``, that
connects back to it.

    pip install 'diaggmm-dist[slurm]'  # dask-jobqueue, into the virtualenv of diaggmm-dist
    python deploy/slurm/jobqueue_cluster.py /shared/features.zarr/X --k 16 \\
        --out /shared/models/features-k16 --checkpoint /shared/ckpt/features-k16 \\
        --jobs 4 --queue compute --account myproject --cores 8 --memory 32GB --walltime 04:00:00

**TLS with mutual authentication, always.** The scheduler listens on the cluster network,
which the other users of the cluster reach too, and whoever can submit work to it runs code
as you. So every connection (workers, this process, the fit) is ``tls://``, and the scheduler
accepts only peers presenting the certificate of this run: ``distributed.Security.temporary()``
makes a new key and self-signed certificate for each run (also its CA), and a client without
them is refused. The worker jobs read them from the shared filesystem, never from the job
script or their command line (the worker's arguments are in ``ps`` for every user of the
node, the script is kept in SLURM's state directory): the key, certificate and
CA are written to files of mode 0600 in a new directory of mode 0700 (``.diaggmm-tls-*``)
under ``--credentials-directory`` (default: the current directory; it must be on the shared
filesystem), the job script holds only their paths (``--tls-key PATH``), and the directory
is removed when the run ends (not if this process is killed with SIGKILL: remove it then).
(dask-jobqueue 0.9 can write a temporary ``security`` to files itself, but in
``shared_temp_directory``, the current directory by default, for as long as the cluster object
lives; written here, the same files also serve the fit.) They are read back and checked,
and handed to dask, by the library's TLS helpers (:mod:`diaggmm_dist.tls`:
``credentials_folder``, ``TLSFiles.security``, ``TLSFiles.environment``): the ``diaggmm fit``
subprocess gets them through dask's own configuration variables
(``DASK_DISTRIBUTED__COMM__TLS__CA_FILE``, ``DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT`` and
``..._KEY``, ``DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION``): paths, never key material, in
its environment; the train flow gets the folder as its ``tls_directory``. The scheduler's
dashboard listens on ``--dashboard-address`` (default ``127.0.0.1:8787``: reach it with
``ssh -L 8787:localhost:8787 login-node``); the workers start none.

By default the fit is the ``diaggmm fit`` console script pointed at the cluster with
``--scheduler``; ``--via flow`` calls the Prefect ``train`` flow (flows/train.py) with
``scheduler_address`` instead, so the run is recorded by the Prefect API named by
PREFECT_API_URL (without it, Prefect uses a temporary local API). ``--dry-run`` prints the
job script that would be submitted and exits, without submitting anything.

Worker jobs that reach their walltime, or are cancelled (``scancel``), end with their worker:
the fit goes on with the other workers (the lost tasks are computed again there, and the
model is the same), but no job is submitted to replace them. If every worker job has ended,
the fit waits for workers: stop it (Ctrl-C) and, with ``--checkpoint``, run the same command
again; it resumes from its last iteration and ends with the model of an uninterrupted run.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
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
    parser.add_argument("--tol", type=float, default=1e-3, help="EM stops below this change")
    parser.add_argument(
        "--chunk-size", type=int, default=None, help="rows per dask chunk (`diaggmm fit`)"
    )
    parser.add_argument(
        "--via",
        choices=["cli", "flow"],
        default="cli",
        help="run `diaggmm fit` (cli) or the Prefect train flow (flow)",
    )
    # SLURM job shape: one job = one node share running `processes` Dask workers.
    parser.add_argument("--jobs", type=int, default=2, help="number of SLURM worker jobs")
    parser.add_argument(
        "--min-workers", type=int, default=1, help="connected workers before the fit starts"
    )
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
        "--credentials-directory",
        default=".",
        help="shared directory that gets the run's private TLS directory (default: here)",
    )
    parser.add_argument(
        "--dashboard-address", default="127.0.0.1:8787", help="the scheduler's dashboard"
    )
    parser.add_argument(
        "--wait-timeout",
        type=float,
        default=3600,
        help="seconds to wait for the first workers to start (queue time)",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="print the worker job script and exit"
    )
    args = parser.parse_args(argv)
    if not Path(args.credentials_directory).is_dir():
        parser.error(
            f"--credentials-directory {args.credentials_directory!r} is not a directory: give "
            "an existing directory on the filesystem the compute nodes share"
        )
    if args.min_workers > args.jobs * args.processes:
        parser.error(
            f"--min-workers {args.min_workers} can never connect: --jobs {args.jobs} x "
            f"--processes {args.processes} start {args.jobs * args.processes} workers"
        )
    return args


@contextlib.contextmanager
def private_directory(parent):
    """A new directory of mode 0700 under ``parent`` for the block, removed with its files."""
    # absolute: the job script names the files in it; mkdtemp: mode 0700
    path = Path(tempfile.mkdtemp(prefix=".diaggmm-tls-", dir=Path(parent).resolve()))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def write_private(path, text):
    """Write ``text`` to a new file ``path`` that only its owner can read."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(text)
    return str(path)


def write_credentials(security, directory):
    """Write the key, certificate and CA of ``security`` (a ``Security.temporary()``) to
    ``ca.pem``, ``cert.pem`` and ``key.pem``, of mode 0600, in ``directory``.

    Returns
    -------
    diaggmm_dist.tls.TLSFiles
        The files, read back and checked (:func:`diaggmm_dist.tls.credentials_folder`): their
        ``security(ALL_ROLES)`` is the scheduler's and the workers' (paths in the job script),
        their ``environment()`` the ``diaggmm fit`` subprocess's, and the folder is the train
        flow's ``tls_directory``.
    """
    from diaggmm_dist.tls import FOLDER_LAYOUTS, credentials_folder

    # temporary() makes one key and one self-signed certificate, also the CA, for every role
    tls = security.get_tls_config_for_role("client")
    for name, text in zip(FOLDER_LAYOUTS[0], (tls["ca_file"], tls["cert"], tls["key"])):
        write_private(directory / name, text)
    return credentials_folder(directory, name="the run's credentials directory")


def make_cluster(args, security):
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
        # paths of files, not key material: the job script holds `--tls-key PATH`
        security=security,
        scheduler_options={"dashboard_address": args.dashboard_address},
        # a worker's dashboard is plain HTTP on every interface
        worker_extra_args=["--no-dashboard"],
    )


def fit_with_cli(args, scheduler_address, files):
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
        "--tol",
        str(args.tol),
        "--scheduler",
        scheduler_address,
    ]
    if args.checkpoint:
        command += ["--checkpoint", args.checkpoint]
    if args.chunk_size:
        command += ["--chunk-size", str(args.chunk_size)]
    # The console script lives next to this virtualenv's python.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    # dask's own variables naming the files: paths, never key material, in its environment
    env = dict(os.environ, PATH=path, **files.environment())
    subprocess.run(command, check=True, env=env)


def fit_with_flow(args, scheduler_address, files):
    from prefect.flows import load_flow_from_entrypoint

    train = load_flow_from_entrypoint(f"{REPO / 'flows' / 'train.py'}:train")
    train(
        data_url=args.data,
        n_components=args.k,
        model_url=args.out,
        checkpoint_url=args.checkpoint,
        max_iter=args.max_iter,
        tol=args.tol,
        scheduler_address=scheduler_address,
        tls_directory=str(Path(files.ca_file).parent),  # the folder the files were written to
    )


def main(argv=None):
    args = arguments(argv)
    from distributed import Client, Security

    from diaggmm_dist.tls import ALL_ROLES

    with private_directory(args.credentials_directory) as credentials:
        # a new key and certificate for this run only
        files = write_credentials(Security.temporary(), credentials)
        with make_cluster(args, files.security(ALL_ROLES)) as cluster:
            if args.dry_run:
                print(cluster.job_script())
                return 0
            cluster.scale(jobs=args.jobs)
            with Client(cluster) as client:
                print(f"scheduler {cluster.scheduler_address}; waiting for workers", flush=True)
                client.wait_for_workers(args.min_workers, timeout=args.wait_timeout)
                # The fit itself is a separate client of the same scheduler.
                if args.via == "cli":
                    fit_with_cli(args, cluster.scheduler_address, files)
                else:
                    fit_with_flow(args, cluster.scheduler_address, files)
    return 0


if __name__ == "__main__":
    sys.exit(main())
