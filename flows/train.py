"""Flow ``train``: fit a diagonal GMM to a Zarr array on a Dask cluster and save the model.

EM runs in blocks of iterations, one task per block (``em-iterations-1-1``, ``em-iterations-2-31``,
...), sized so that a task lasts about ``seconds_per_task``; every iteration is checkpointed to
Zarr, so a block retried after a transient failure resumes after the last iteration done. The
convergence table artifact has one row per iteration. See flows/blocks.py and flows/tasks.py.

With several candidate numbers of components (``n_components=[2, 4, 8]``), one task
(``select-n-components``) fits them all through the same data passes
(:func:`diaggmm_dist.select_n_components`), saves the one ``criterion`` picks, and the flow
publishes the table and a BIC-vs-K plot. Every candidate is checkpointed after every
iteration, so a retried task resumes after the last iteration done.

    from flows.train import train
    train("features.zarr/X", 16, "models/features-k16", scheduler_address="tcp://scheduler:8786")
    train("features.zarr/X", [4, 8, 16, 32], "models/features", criterion="bic")
    train("s3://bucket/features.zarr/X", 16, "s3://bucket/models/k16",
          storage_options={"client_kwargs": {"endpoint_url": "http://minio:9000"}},
          storage_options_block="feature-store-credentials")
"""

# Annotations are evaluated (no `from __future__ import annotations`): pydantic validates the
# parameters of a flow loaded by file path, whose module it cannot look up for string names.
from dataclasses import replace

from prefect import flow, get_run_logger
from pydantic import Field

from . import parameters as P
from .blocks import SECONDS_PER_TASK, fit_in_blocks
from .estimators import check_estimator, check_settings, fit_estimator
from .parameters import (
    DEFAULT_DTYPE,
    Criterion,
    Dtype,
    Estimator,
    InitParams,
    PriorType,
    parameter_help,
)
from .runtime import flow_client, flow_storage_options
from .select_k import plot_selection, publish_selection, select_components, selection_plot_url
from .specs import ChoiceOfK, FitSpec
from .tasks import default_checkpoint_url

__all__ = ["train"]


def check_choice(n_components, criterion: str, heldout_fraction: float) -> list[int] | None:
    """Refuse a wrong choice of K before any work.

    Parameters
    ----------
    n_components : int or list of int
        The flow's ``n_components``: one number, or candidates.
    criterion, heldout_fraction
        As the flow's (checked even for one K).

    Returns
    -------
    list of int or None
        The candidates, or None for one K (a list of one is that number; the library checks
        it, as before).

    Raises
    ------
    TypeError, ValueError
        As :func:`diaggmm_dist.validation.check_selection`.
    """
    # the library is imported when a flow runs, not when its module loads (as every flow does)
    from diaggmm_dist.validation import (
        check_candidates,
        check_criterion,
        check_heldout_fraction,
        check_selection,
        is_int,
    )

    check_criterion(criterion)
    check_heldout_fraction(heldout_fraction)
    if is_int(n_components):
        return None
    if not isinstance(n_components, (list, tuple)):
        raise TypeError(
            f"n_components must be an integer or a list of integers, got {n_components!r}."
        )
    if not n_components:  # the flow's own wording: it also takes one number
        raise ValueError(
            "n_components is an empty list: give one number of components or several "
            "candidates, e.g. [2, 4, 8]."
        )
    candidates = check_candidates(n_components, name="n_components")
    if len(candidates) == 1:
        return None
    return check_selection(candidates, criterion, heldout_fraction, name="n_components")


# the docstring's Parameters section is made of the help texts (flows/parameters.py)
@parameter_help(
    data_url="Zarr array (local path or fsspec URL), e.g. ``/data/features.zarr/X``; a Parquet "
    "table; or, with ``feature_dim``/``features``, a gridded Zarr group or NetCDF file.",
    n_components="The number of components; or several candidates (each >= 1, no repeats), "
    "all fitted through the same data passes, of which ``criterion`` picks the one saved (a "
    "list of one is that one number). A Bayesian mixture: the most components (one number); "
    "a classifier: the components of every class (1 is Gaussian naive Bayes when every row "
    "is labelled).",
    model_url="Where the model is written (its ``save``; replaced if it exists). With "
    "several candidates, the BIC-vs-K plot is written next to it, at ``<model_url>.bic.png``.",
)
@flow(name="diaggmm-train")
def train(
    # required: plain (a Field default would be the value of a call that leaves them out)
    data_url: str,
    n_components: int | list[int],
    model_url: str,
    checkpoint_url: str | None = Field(
        None,
        description="The training checkpoint; by default ``<model_url>.checkpoint``. A run "
        "that finds its own checkpoint there continues from it; a checkpoint of another run "
        "(other settings or data) is refused. With several candidates it holds all of them (a "
        "retry of the ``select-n-components`` task resumes it).",
    ),
    init_params: InitParams = Field("kmeans", description=P.INIT_PARAMS),
    tol: float = Field(1e-3, description=P.TOL),
    max_iter: int = Field(100, description=P.MAX_ITER),
    dtype: Dtype = Field(DEFAULT_DTYPE, description=P.DTYPE),
    random_state: int | None = Field(0, description=P.RANDOM_STATE),
    scheduler_address: str | None = Field(None, description=P.SCHEDULER_ADDRESS),
    feature_dim: str | None = Field(
        None,
        description="Gridded data: the dimension holding the features (a store with one variable).",
    ),
    features: list[str] | None = Field(
        None, description="Gridded data: the variables that are the features."
    ),
    seconds_per_task: float = Field(
        SECONDS_PER_TASK,
        description=P.SECONDS_PER_TASK + " Not used with several candidates (one task).",
    ),
    criterion: Criterion = Field("bic", description=P.CRITERION),
    heldout_fraction: float = Field(
        0.1,
        description="With several candidates: share of the rows, in [0, 1), held out of the "
        "fit and scored (picked by a hash of the row index); 0 fits every row (then no "
        "``heldout``).",
    ),
    storage_options: dict | None = Field(None, description=P.STORAGE_OPTIONS),
    storage_options_block: str | None = Field(None, description=P.STORAGE_OPTIONS_BLOCK),
    tls_directory: str | None = Field(None, description=P.TLS_DIRECTORY),
    labels_url: str | None = Field(
        None,
        description="Fit a classifier (``DiagGMMClassifier``) of these labels: a Zarr array "
        "of one integer label per row of the data, -1 for an unlabelled row (with "
        "``feature_dim``/``features``, a Zarr group with the data's sample dims), or the name "
        "of the label column of Parquet data (never a feature: the features are the other "
        "columns). Every row labelled: Gaussian naive Bayes in one pass; some: semi-supervised "
        "EM.",
    ),
    estimator: Estimator | None = Field(
        None,
        description="``gmm``: maximum-likelihood EM (``DiagGMM``, checkpointed in blocks of "
        "iterations); ``bayesian``: variational Bayes (``BayesianDiagGMM``), which leaves the "
        "components the data does not need with a weight near 0; ``classifier``: needs "
        "``labels_url``. By default ``classifier`` with ``labels_url``, else ``gmm``. The "
        "Bayesian mixture and the classifier are fitted in one task, checkpointed at "
        "``checkpoint_url`` after every iteration (a retry resumes; naive Bayes: its model).",
    ),
    var_smoothing: float = Field(
        1e-9,
        description="Classifier: this times the largest feature variance is added to every "
        "variance (``GaussianNB``'s ``var_smoothing``).",
    ),
    weight_concentration_prior_type: PriorType = Field(
        "dirichlet_process",
        description="Bayesian mixture: the weights' prior, stick-breaking or a Dirichlet "
        "distribution.",
    ),
    weight_concentration_prior: float | None = Field(
        None,
        description="Bayesian mixture: the weights' concentration (> 0); smaller leaves more "
        "components empty. None: 1 / n_components.",
    ),
    weight_threshold: float = Field(
        1e-3,
        description="Bayesian mixture: a component counts as effective (and predictions may "
        "name it) when its weight is above this.",
    ),
) -> dict:
    """Fit ``DiagGMM`` (or a Bayesian mixture, or a classifier of ``labels_url``) to the data
    at ``data_url`` and save it at ``model_url``.

    Returns
    -------
    dict
        ``model_url``, ``checkpoint_url``, ``n_iter``, ``converged``, ``lower_bound`` and
        ``seconds_per_iteration`` (mean over the iterations this run did). With several
        candidates: ``model_url``, ``checkpoint_url``, ``n_components`` (the K chosen),
        ``criterion``, ``n_iter``, ``converged`` and ``lower_bound`` of the chosen model,
        ``table`` (one dict per candidate: ``n_components``, ``chosen``, ``lower_bound``,
        ``log_likelihood``, ``bic``, ``aic``, ``heldout_log_likelihood``, ``n_iter``,
        ``converged``), ``plot_url`` (None without matplotlib) and ``seconds``. Artifacts:
        the table ``train-selection`` and the markdown ``train-selection-summary``. A
        Bayesian mixture or a classifier: :func:`flows.estimators.fit_estimator`'s summary
        (``model_url``, ``estimator``, ``n_iter``, ``converged``, ``lower_bound``, and
        ``effective_n_components`` or ``classes``, ``n_labelled``, ``n_unlabelled``).
    """
    kind = check_estimator(estimator, labels_url, n_components, checkpoint_url)
    candidates = check_choice(n_components, criterion, heldout_fraction)
    if candidates is None and isinstance(n_components, (list, tuple)):
        (n_components,) = n_components  # a list of one is that number
    logger = get_run_logger()
    options = flow_storage_options(storage_options, storage_options_block)
    layout = {
        key: value for key, value in (("feature_dim", feature_dim), ("features", features)) if value
    }
    spec = FitSpec(
        data_url=data_url,
        checkpoint_url=checkpoint_url or default_checkpoint_url(model_url),
        model_url=model_url,
        settings={
            "tol": tol,
            "init_params": init_params,
            "dtype": dtype,
            "random_state": random_state,
        },
        max_iter=max_iter,
        layout=layout or None,
        storage_options=options,
    )
    if kind != "gmm":  # one task: flows/estimators.py
        spec = replace(
            spec,
            settings={
                **spec.settings,
                "n_components": n_components,
                "var_smoothing": var_smoothing,
                "weight_concentration_prior_type": weight_concentration_prior_type,
                "weight_concentration_prior": weight_concentration_prior,
                "weight_threshold": weight_threshold,
            },
        )
        check_settings(kind, spec.settings, max_iter)
        with flow_client(scheduler_address, tls_directory) as client:
            address = client.scheduler.address
            logger.info("fitting a %s to %s on the dask scheduler %s", kind, data_url, address)
            return fit_estimator(replace(spec, scheduler_address=address), kind, labels_url)
    if candidates is not None:
        choice = ChoiceOfK(candidates, criterion, heldout_fraction)
        return _choose(spec, choice, logger, scheduler_address, tls_directory)
    spec = replace(spec, settings={"n_components": n_components, **spec.settings})
    with flow_client(scheduler_address, tls_directory) as client:
        address = client.scheduler.address
        logger.info(
            "fitting %d components to %s on the dask scheduler %s", n_components, data_url, address
        )
        summary, table = fit_in_blocks(
            replace(spec, scheduler_address=address),
            seconds_per_task=seconds_per_task,
            artifact_key="train-convergence",
        )
    timed = [row["seconds"] for row in table if row["seconds"] is not None]
    return {
        "model_url": summary["model_url"],
        "checkpoint_url": spec.checkpoint_url,
        "n_iter": summary["n_iter"],
        "converged": summary["converged"],
        "lower_bound": summary["lower_bound"],
        "seconds_per_iteration": sum(timed) / len(timed) if timed else None,
    }


def _choose(spec: FitSpec, choice: ChoiceOfK, logger, scheduler_address, tls_directory) -> dict:
    """Several candidates: one ``select-n-components`` task, the plot, the artifacts."""
    with flow_client(scheduler_address, tls_directory) as client:
        address = client.scheduler.address
        logger.info(
            "choosing among K = %s by %s on %s, on the dask scheduler %s",
            ", ".join(map(str, choice.candidates)),
            choice.criterion,
            spec.data_url,
            address,
        )
        selection = select_components(replace(spec, scheduler_address=address), choice)
    plot_url = plot_selection(
        selection["table"],
        selection["n_components"],
        choice.criterion,
        selection_plot_url(spec.model_url),
        spec.storage_options,
    )
    publish_selection(selection, spec.data_url, selection["model_url"], plot_url)
    return {
        "model_url": selection["model_url"],
        "checkpoint_url": spec.checkpoint_url,
        "n_components": selection["n_components"],
        "criterion": choice.criterion,
        "n_iter": selection["n_iter"],
        "converged": selection["converged"],
        "lower_bound": selection["lower_bound"],
        "table": selection["table"],
        "plot_url": plot_url,
        "seconds": selection["seconds"],
    }
