"""Choosing the number of components: every candidate K fitted through the same data passes.

Reading the data is the cost of an out-of-core fit; a few more models in each pass are
nearly free. :func:`select_n_components` initializes one model per candidate, all in the
same passes (one sample and shared Lloyd passes for ``"kmeans"``, see
:func:`~diaggmm_dist.initialization.initial_parameters_of_models`), then runs EM on all of
them side by side (their coefficients stacked, as restarts are in :meth:`DiagGMM.fit`), so
``candidates=[2, 4, 8, 16, 32]`` costs about one fit's passes, not five fits'. A fraction
of the rows, picked by a hash of the row index (so the same rows whatever the chunking), is
held out of the fit to score the candidates on unseen data.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import dask.array as da
import numpy as np
from sklearn.utils import check_random_state

from . import engine, inputs, kernels, parameters
from .data_pass import DataPass
from .em import e_step_models
from .em_settings import EMSettings, checkpoint_identity, store_location, weights_fingerprint
from .fitting import EMRun
from .initialization import initial_parameters_of_models
from .locations import Location, StorageOptions, checked_storage_options
from .mixture import DiagGMM
from .validation import check_selection, check_settings

if TYPE_CHECKING:
    from zarr.abc.store import Store

    from .mixture import Data, Weights


class ComponentSelection(NamedTuple):
    """What :func:`select_n_components` returns: every candidate's scores and fitted model.

    Parameters
    ----------
    table : list of dict
        One row per candidate, in the order given: ``n_components``, ``lower_bound``,
        ``log_likelihood``, ``bic``, ``aic``, ``heldout_log_likelihood``, ``n_iter`` and
        ``converged`` (see :func:`select_n_components`).
    best : DiagGMM
        The model the criterion picks.
    models : dict of int to DiagGMM
        Every candidate's fitted model, by number of components.
    criterion : {"bic", "aic", "heldout"}
        The criterion that picked ``best``.

    Examples
    --------
    >>> import numpy as np
    >>> from diaggmm_dist import select_n_components
    >>> X = np.random.default_rng(0).normal(size=(200, 2))
    >>> X[100:] += 6.0
    >>> selection = select_n_components(X, [1, 2, 3], random_state=0)
    >>> selection.best.n_components, sorted(selection.models)
    (2, [1, 2, 3])
    >>> [row["n_components"] for row in selection.table]
    [1, 2, 3]
    """

    table: list[dict[str, Any]]
    best: DiagGMM
    models: dict[int, DiagGMM]
    criterion: str

    def to_markdown(self) -> str:
        """The table as Markdown, the chosen K marked.

        Returns
        -------
        str
            A header and one line per candidate: K, lower bound, log-likelihood, BIC, AIC,
            held-out log-likelihood (``—`` without held-out rows), iterations, converged.

        Examples
        --------
        >>> import numpy as np
        >>> X = np.random.default_rng(0).normal(size=(200, 2))
        >>> X[100:] += 6.0
        >>> selection = select_n_components(X, [1, 2], random_state=0)
        >>> print(selection.to_markdown())  # doctest: +ELLIPSIS
        | K | lower bound | log-likelihood | BIC | AIC | held-out log-likelihood | iterations | ...
        |---:|---:|---:|---:|---:|---:|---:|---|
        | 1 | ... | ... | ... | ... | ... | ... | True |
        | 2 **(chosen)** | ... | ... | ... | ... | ... | ... | True |
        """
        lines = [
            "| K | lower bound | log-likelihood | BIC | AIC | held-out log-likelihood "
            "| iterations | converged |",
            "|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for row in self.table:
            mark = " **(chosen)**" if row["n_components"] == self.best.n_components else ""
            lines.append(
                f"| {row['n_components']}{mark} | {row['lower_bound']:.6g} "
                f"| {row['log_likelihood']:.6g} "
                f"| {row['bic']:.6g} | {row['aic']:.6g} | {_text(row['heldout_log_likelihood'])} "
                f"| {row['n_iter']} | {row['converged']} |"
            )
        return "\n".join(lines)


def _text(value):
    return "—" if value is None else f"{value:.6g}"


def heldout_rows(rows, fraction, seed=0):
    """True for the rows (global indices) held out: a ``fraction`` picked by a hash of the index."""
    bits = kernels.splitmix64(
        np.asarray(rows, dtype=np.uint64) ^ kernels.splitmix64(np.uint64(seed))
    )
    return (bits >> np.uint64(11)).astype(np.float64) * 2.0**-53 < fraction


def _split_weights(data, fraction, sample_weight):
    """Per-sample weights of the rows fitted and of those held out (lazy, chunked like ``data``)."""
    held = da.map_blocks(heldout_rows, engine.row_indices(data), fraction, dtype=bool)
    base = sample_weight if sample_weight is not None else da.ones(held.shape, chunks=held.chunks)
    return da.where(held, 0.0, base), da.where(held, base, 0.0)


def select_n_components(
    X: Data,
    candidates: Sequence[int] = (2, 4, 8, 16, 32),
    criterion: str = "bic",
    *,
    heldout_fraction: float = 0.1,
    sample_weight: Weights | None = None,
    feature_dim: str | None = None,
    features: list[str] | None = None,
    columns: list[str] | None = None,
    checkpoint: str | os.PathLike | Location | Store | None = None,
    overwrite_checkpoint: bool = False,
    storage_options: StorageOptions | None = None,
    **settings: Any,
) -> ComponentSelection:
    """Fit a mixture for every candidate number of components in the same data passes, and pick one.

    Parameters
    ----------
    X : array-like, dask array, zarr.Array, str, xarray object or table
        Rows of features, in any form :meth:`DiagGMM.fit` takes.
    candidates : sequence of int, default=(2, 4, 8, 16, 32)
        Numbers of components to try (each >= 1, no repeats).
    criterion : {"bic", "aic", "heldout"}, default="bic"
        Pick the lowest BIC or AIC on the fitted rows, or the highest mean log-likelihood on
        the held-out rows.
    heldout_fraction : float, default=0.1
        Share of the rows held out of the fit and scored afterwards, in [0, 1); 0 fits every
        row (no held-out column; ``criterion="heldout"`` then refused).
    sample_weight, feature_dim, features, columns
        As in :meth:`DiagGMM.fit`.
    checkpoint : str, os.PathLike, Location or zarr store, optional
        Zarr group for training checkpoints, as in :meth:`DiagGMM.fit`: every candidate's state
        is saved after the initialization and after every iteration, and a rerun with the same
        data and settings (candidates and ``heldout_fraction`` included) resumes it and ends
        with exactly the uninterrupted result.
    overwrite_checkpoint : bool, default=False
        Start afresh when ``checkpoint`` holds another run (else that is refused).
    storage_options : dict, optional
        fsspec options (endpoint, credentials, ...) for every URL of this call: ``X`` (when it
        is a path or URL) and ``checkpoint``, as in :meth:`DiagGMM.fit`. For other options
        per URL, pass Zarr store objects (or :class:`~diaggmm_dist.locations.Location`
        objects) instead.
    **settings
        Any other :class:`DiagGMM` parameter (``tol``, ``max_iter``, ``init_params``,
        ``dtype``, ``random_state``, ...), shared by all candidates. ``n_init`` must be 1.

    Returns
    -------
    ComponentSelection
        ``table``: one dict per candidate with ``n_components``, ``lower_bound`` (as
        ``DiagGMM.lower_bound_``), ``log_likelihood`` (mean per fitted row at the final
        parameters), ``bic``, ``aic`` (on the fitted rows, as ``DiagGMM.bic``),
        ``heldout_log_likelihood`` (mean per held-out row; None without held-out rows),
        ``n_iter`` and ``converged``; ``best``, the model picked; ``models``, all of them by K.

    Raises
    ------
    TypeError, ValueError
        Before any work, for candidates, criterion or ``heldout_fraction`` out of range (see
        :func:`~diaggmm_dist.validation.check_selection`), a setting this function sets
        itself, ``n_init`` other than 1, or an out-of-range estimator setting.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.random.default_rng(0).normal(size=(200, 2))
    >>> X[100:] += 6.0
    >>> selection = select_n_components(X, [1, 2, 3], criterion="bic", random_state=0)
    >>> selection.best.n_components
    2
    >>> selection.best.predict(X[:3]).shape
    (3,)
    """
    candidates = check_selection(candidates, criterion, heldout_fraction)
    for name in ("n_components", "weights_init", "means_init", "precisions_init", "warm_start"):
        if name in settings:
            raise ValueError(f"select_n_components sets {name} itself: do not pass it.")
    if settings.get("n_init", 1) != 1:
        raise ValueError(
            "select_n_components fits one initialization per candidate: n_init must be 1."
        )
    template = DiagGMM(max(candidates), **settings)
    check_settings(template)
    if storage_options is not None:
        storage_options = checked_storage_options(storage_options, "select_n_components")
    checkpoint = store_location(checkpoint, storage_options)
    samples = inputs.as_samples(
        X,
        template.chunk_size,
        feature_dim=feature_dim,
        features=features,
        columns=columns,
        storage_options=storage_options,
    )
    data = samples.array
    n_samples, n_features = engine.n_rows(data), data.shape[-1]
    if max(candidates) > n_samples:
        raise ValueError(
            f"candidate {max(candidates)} is larger than the number of samples ({n_samples})."
        )
    weights = (
        None
        if sample_weight is None
        else inputs.sample_values(sample_weight, samples, "sample_weight")
    )
    fit_weights, held_weights = (
        _split_weights(data, heldout_fraction, weights) if heldout_fraction else (weights, None)
    )
    fit_pass = DataPass(data, template.dtype, template.missing, fit_weights)
    fingerprint = engine.fingerprint(data)
    weighted = weights_fingerprint(weights)
    identity = checkpoint_identity(
        template.get_params(),
        fingerprint,
        candidates=candidates,
        heldout_fraction=float(heldout_fraction),
        **({} if weighted is None else {"sample_weight": weighted}),
    )
    random_state = check_random_state(template.random_state)
    with EMRun.open(
        fit_pass, EMSettings.of(template), checkpoint, identity, overwrite=overwrite_checkpoint
    ) as run:
        run.initialize(
            len(candidates),
            lambda indices: initial_parameters_of_models(
                data,
                [candidates[index] for index in indices],
                template.init_params,
                random_state,
                template.reg_covar,
                fit_pass,
                tol=template.tol,
            ),
            random_state,
        )
        states = run.run()

    # every candidate's log-likelihood at its final parameters, on the fitted and the held-out rows
    final = [(state.weights, state.means, state.precisions) for state in states]
    scores = {}
    for name, pass_weights in (("fit", fit_weights), ("heldout", held_weights)):
        if name == "heldout" and pass_weights is None:
            continue
        held_pass = DataPass(data, template.dtype, template.missing, pass_weights, checked=True)
        blocks, _, _ = e_step_models(held_pass, final)
        scores[name] = [kernels.split_statistics(block)[-1] for block in blocks]

    layout = {"feature_dim": feature_dim, "features": features, "columns": columns}
    table, models = [], {}
    for index, (k, state) in enumerate(zip(candidates, states)):
        model = DiagGMM(k, **settings).adopt_state(state, samples, layout, fingerprint)
        model.n_reseeded_ = state.n_reseeded
        models[k] = model
        fitted = scores["fit"][index]
        n = fitted["weight"]
        log_likelihood = fitted["log_likelihood"] / n
        held = scores["heldout"][index] if "heldout" in scores else None
        table.append(
            {
                "n_components": k,
                "lower_bound": state.lower_bound,
                "log_likelihood": log_likelihood,
                **{
                    name: parameters.information_criterion(name, log_likelihood, n, k, n_features)
                    for name in ("bic", "aic")
                },
                "heldout_log_likelihood": None
                if held is None or held["weight"] == 0
                else held["log_likelihood"] / held["weight"],
                "n_iter": state.iteration,
                "converged": state.converged,
            }
        )
    if criterion == "heldout":
        chosen = max(table, key=lambda row: row["heldout_log_likelihood"])
    else:
        chosen = min(table, key=lambda row: row[criterion])
    return ComponentSelection(table, models[chosen["n_components"]], models, criterion)
