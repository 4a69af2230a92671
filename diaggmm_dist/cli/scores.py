"""``diaggmm predict`` with a ``DiagGMMClassifier``: its class scores, and rows per class.

The stores and their writers are :mod:`diaggmm_dist.outputs.estimator_scores` (a Bayesian
mixture goes through ``DiagGMM``'s own predict path, adapted by ``scored_model``).
"""

from __future__ import annotations

import os
import time

import numpy as np

from ..outputs.estimator_scores import is_classifier, scored_model, write_class_scores

__all__ = ["is_classifier", "predict_classes", "scored_model"]


def predict_classes(args, console, model, samples, options, client_context, where) -> int:
    """``diaggmm predict`` with a classifier: write its scores, print rows per class.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed arguments of ``predict`` (output checked already).
    console : Console
    model : DiagGMMClassifier
    samples : Samples
        The data, read with the model's layout and checked against its features.
    options : dict or None
        The command's storage options.
    client_context, where : callable
        The command's dask client, and where it runs (for the first line).

    Returns
    -------
    int
        0; failures are raised.
    """
    import dask.array as da
    import zarr

    from ..engine import compute
    from ..locations import location
    from ..outputs.written import NOT_WRITTEN, UnwrittenChunksError, check_written
    from .console import library_output

    gridded = samples.template is not None
    n_classes = len(model.classes_)
    start = time.monotonic()
    with library_output(console, args.quiet), client_context(args) as client:
        if not args.quiet:
            console.print(
                f"predict: {samples.n_rows:,} rows from {args.data} with the classifier "
                f"{args.model} ({n_classes} classes), {where(client)}"
            )
        write_class_scores(
            model, samples, args.out, overwrite=args.overwrite, storage_options=options
        )
        try:
            check_written(args.out, options)
        except UnwrittenChunksError as err:  # a runtime failure of the writer, not bad input
            raise RuntimeError(str(err)) from None
        written = location(args.out, options).zarr_store(read_only=True)
        labels = da.from_zarr(zarr.open_array(written, path="labels", mode="r")).ravel()
        (counts,) = compute(
            da.bincount(labels.astype(np.int64) - NOT_WRITTEN, minlength=n_classes + 2)
        )
    seconds = time.monotonic() - start
    if counts[0]:
        raise RuntimeError(f"{args.out!r}: {int(counts[0])} rows were never written.")
    shown = ", ".join(
        f"{label}: {int(count)}" for label, count in zip(model.classes_[:16], counts[2:])
    ) + (", ..." if n_classes > 16 else "")
    console.print(
        f"done: {samples.n_rows:,} rows classified in {seconds:.1f} s, "
        f"{int(counts[1])} unscored (NaN/inf); rows per class {{{shown}}}; labels (class "
        f"codes, see the classes attribute), max_resp, log_likelihood written to "
        f"{os.fspath(args.out)}" + (" (a label map)" if gridded else "")
    )
    return 0
