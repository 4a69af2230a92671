"""The main job (``make run``): regimes of the global Linke-turbidity climatology.

Converts pvlib's 2160 × 4320 × 12 turbidity climatology (9.3 million pixels, 12 monthly
bands; the ``demo`` extra) once to a chunked Zarr store, runs the ``train`` flow on it (a
LocalCluster, EM in blocks of checkpointed iterations, one task per block), writes the model
and the label map to Zarr, saves a PNG map of the regimes and a PNG convergence plot, and
prints a summary.

    python -m flows.demo [--k 8] [--out runs/demo]
    python -m flows.demo --data my.zarr --feature-dim band      # your own gridded Zarr/NetCDF
    python -m flows.demo --data table.parquet                   # or a Parquet feature table
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

# The local cluster's INFO chatter (connections opening and closing) would bury the flow's
# per-iteration lines; its warnings and errors still show. Read when distributed is imported.
os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")

from .train import train


def _arguments(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data",
        help="your own data: a gridded Zarr store or NetCDF file (with --feature-dim "
        "or --features), a Zarr array, or a Parquet table; default: the turbidity climatology",
    )
    parser.add_argument("--feature-dim", help="gridded data: the dimension holding the features")
    parser.add_argument(
        "--features", help="gridded data: comma-separated variables that are the features"
    )
    parser.add_argument("--k", type=int, default=8, help="number of regimes (mixture components)")
    parser.add_argument("--max-iter", type=int, default=100)
    parser.add_argument("--tol", type=float, default=1e-3)
    parser.add_argument("--out", default="runs/demo", help="folder for the outputs")
    parser.add_argument("--scheduler", help="dask scheduler address (default: a LocalCluster)")
    parser.add_argument(
        "--tls-dir",
        help="for a tls:// scheduler: a folder holding ca.pem, cert.pem and key.pem (default: "
        "dask's config distributed.comm.tls.*)",
    )
    return parser.parse_args(argv)


def main(argv=None):

    from diaggmm_dist import DiagGMM
    from diaggmm_dist.datasets.linke import convert_linke_turbidity
    from diaggmm_dist.inputs import open_gridded
    from diaggmm_dist.outputs.label_maps import write_label_map
    from diaggmm_dist.outputs.written import open_output
    from diaggmm_dist.plots import plot_convergence, plot_label_map

    args = _arguments(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    feature_dim = args.feature_dim
    features = args.features.split(",") if args.features else None
    if args.data is None:
        start = time.perf_counter()
        data_url = str(out / "linke_turbidity.zarr")
        fresh = not os.path.exists(data_url)
        convert_linke_turbidity(data_url)
        if fresh:
            print(
                f"converted pvlib's Linke turbidity climatology to {data_url} in "
                f"{time.perf_counter() - start:.1f} s"
            )
        feature_dim = "month"
    else:
        data_url = args.data
    gridded = feature_dim is not None or features is not None
    model_url = str(out / "model.zarr")
    start = time.perf_counter()
    result = train(
        data_url,
        args.k,
        model_url,
        checkpoint_url=str(out / "checkpoint.zarr"),
        tol=args.tol,
        max_iter=args.max_iter,
        dtype="float32",
        random_state=0,
        scheduler_address=args.scheduler,
        tls_directory=args.tls_dir,
        feature_dim=feature_dim,
        features=features,
    )
    fit_seconds = time.perf_counter() - start
    model = DiagGMM.load(model_url)
    outputs = [model_url]
    if gridded:
        data = open_gridded(data_url)
        labels_url = str(out / "labels.zarr")
        write_label_map(model, data, labels_url, overwrite=True)
        labels = open_output(labels_url, decode_times=False).labels  # refuses lost chunks
        while labels.ndim > 2:  # a map per first sample dim would be many maps: show the first
            labels = labels.isel({labels.dims[0]: 0})
        outputs += [
            labels_url,
            str(
                plot_label_map(
                    labels, out / "regimes.png", title=f"{args.k} regimes of {Path(data_url).name}"
                )
            ),
        ]
        dims = " x ".join(f"{name} {length}" for name, length in data.sizes.items())
        pixels = data.size // model.n_features_in_ if hasattr(data, "size") else 0
        size = f"{dims}: {pixels:,} samples x {model.n_features_in_} features"
    else:
        size = f"{model.data_fingerprint_['shape'][0]:,} rows x {model.n_features_in_} features"
    outputs.append(str(plot_convergence(model.lower_bounds_, out / "convergence.png")))
    per_iteration = result["seconds_per_iteration"]
    print(f"data      {data_url}: {size}")
    print(
        f"model     K={model.n_components}, {model.n_iter_} EM iterations, "
        f"converged={model.converged_}, "
        f"final mean log-likelihood {model.lower_bound_:.5f}"
    )
    print(
        f"time      {fit_seconds:.1f} s for the train flow"
        + (f", {per_iteration:.2f} s per EM iteration" if per_iteration else "")
    )
    print("weights   " + " ".join(f"{w:.3f}" for w in model.weights_))
    print("outputs   " + "\n          ".join(outputs))


if __name__ == "__main__":
    main()
