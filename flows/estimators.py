"""The train flow's other estimators: a classifier of labelled rows, a Bayesian mixture.

``train(..., labels_url=...)`` fits a :class:`~diaggmm_dist.DiagGMMClassifier` (Gaussian
naive Bayes when every row is labelled, semi-supervised EM otherwise) and
``train(..., estimator="bayesian")`` a :class:`~diaggmm_dist.BayesianDiagGMM`. Each is one
task (``fit-classifier``, ``fit-bayesian``) that fits and saves the model. Both are
checkpointed at the flow's ``checkpoint_url`` (the Bayesian fit and the classifier's
semi-supervised EM after every iteration, Gaussian naive Bayes once, its finished model), so
a retry after a transient failure resumes the fit, and a run that finds its finished
checkpoint takes its model without a pass.
"""

from __future__ import annotations

from prefect import get_run_logger, task

from .runtime import TASK_OPTIONS, on_scheduler
from .specs import FitSpec
from .tasks import finite_or_none, quiet_convergence

#: The train flow's estimators, as its ``estimator`` parameter names them.
ESTIMATORS = ("gmm", "bayesian", "classifier")


def check_estimator(
    estimator: str | None, labels_url: str | None, n_components, checkpoint_url: str | None
) -> str:
    """The estimator a train run fits, its parameters checked before any work.

    Parameters
    ----------
    estimator : {"gmm", "bayesian", "classifier"} or None
        The flow's ``estimator``; None: ``classifier`` with ``labels_url``, else ``gmm``.
    labels_url : str or None
        The flow's ``labels_url``.
    n_components : int or list of int
        The flow's ``n_components``: one number for a classifier or a Bayesian mixture.
    checkpoint_url : str or None
        The flow's ``checkpoint_url`` (every estimator takes one).

    Returns
    -------
    str
        ``"gmm"``, ``"bayesian"`` or ``"classifier"``.

    Raises
    ------
    ValueError
        Labels without a classifier, a classifier without labels, or several
        ``n_components``.
    """
    kind = estimator or ("classifier" if labels_url else "gmm")
    if kind not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS} or None, got {estimator!r}.")
    if kind == "classifier" and not labels_url:
        raise ValueError(
            "estimator='classifier' needs labels_url: one label per row of the data, -1 for "
            "an unlabelled row."
        )
    if kind != "classifier" and labels_url:
        raise ValueError(
            f"labels_url is given, but estimator={kind!r} does not use labels: leave estimator "
            "out (or give 'classifier') to fit a classifier."
        )
    if kind == "gmm":
        return kind
    if isinstance(n_components, (list, tuple)):
        if len(n_components) != 1:
            raise ValueError(
                f"estimator={kind!r} takes one n_components ("
                + ("components per class" if kind == "classifier" else "the most components")
                + f"), got the candidates {list(n_components)}."
            )
    return kind


def _build(kind: str, settings: dict, max_iter: int):
    """The unfitted estimator, its settings checked."""
    common = {name: settings[name] for name in ("tol", "dtype")}
    if kind == "classifier":
        from diaggmm_dist import DiagGMMClassifier
        from diaggmm_dist.classifier_fit import check_classifier_settings

        est = DiagGMMClassifier(
            settings["n_components"],
            var_smoothing=settings["var_smoothing"],
            max_iter=max_iter,
            **common,
        )
        check_classifier_settings(est)
        return est
    from diaggmm_dist import BayesianDiagGMM
    from diaggmm_dist.bayesian_settings import check_vb_settings

    est = BayesianDiagGMM(
        n_components=settings["n_components"],
        init_params=settings["init_params"],
        random_state=settings["random_state"],
        weight_concentration_prior_type=settings["weight_concentration_prior_type"],
        weight_concentration_prior=settings["weight_concentration_prior"],
        weight_threshold=settings["weight_threshold"],
        max_iter=max_iter,
        **common,
    )
    check_vb_settings(est)
    return est


def check_settings(kind: str, settings: dict, max_iter: int) -> None:
    """Refuse an out-of-range setting of the run's estimator before any work.

    Raises
    ------
    ValueError
        The estimator's own message.
    """
    _build(kind, settings, max_iter)


def _labels(spec: FitSpec, labels_url: str) -> tuple:
    """The labels as the classifier takes them, and the data's layout (a Parquet label column
    is never a feature: the features are every other column)."""
    from diaggmm_dist.cli.estimators import open_labels, parquet_feature_columns
    from diaggmm_dist.inputs import as_samples
    from diaggmm_dist.inputs.tables import looks_like_parquet

    layout = dict(spec.layout or {})
    options = spec.storage_options
    if looks_like_parquet(spec.data_url):
        columns = parquet_feature_columns(spec.data_url, labels_url, options, name="labels_url")
        return labels_url, {**layout, "columns": columns}
    samples = as_samples(spec.data_url, storage_options=options, **layout)
    return open_labels(labels_url, samples, layout, options, name="labels_url"), layout


@task(name="fit-estimator", task_run_name="fit-{kind}", **TASK_OPTIONS)
def fit_estimator(spec: FitSpec, kind: str, labels_url: str | None = None) -> dict:
    """Fit a classifier or a Bayesian mixture in one task and save it at ``spec.model_url``.

    Parameters
    ----------
    spec : FitSpec
        The data, model, checkpoint, settings, ``max_iter``, layout and scheduler.
    kind : {"classifier", "bayesian"}
        The estimator.
    labels_url : str, optional
        The classifier's labels: a Zarr array (a gridded store with the data's sample dims),
        or the label column of Parquet data.

    Returns
    -------
    dict
        ``model_url``, ``estimator``, ``n_iter``, ``converged``, ``lower_bound`` (None for a
        classifier without EM); a classifier adds ``classes``, ``n_labelled`` and
        ``n_unlabelled``, a Bayesian mixture ``effective_n_components``.
    """
    import math

    logger = get_run_logger()
    est = _build(kind, spec.settings, spec.max_iter)
    options = spec.storage_options
    with on_scheduler(spec.scheduler_address), quiet_convergence():
        # a retry of the task resumes from the checkpoint
        checkpoint = spec.checkpoint_url or None
        if kind == "classifier":
            labels, layout = _labels(spec, labels_url)
            est.fit(spec.data_url, labels, storage_options=options, checkpoint=checkpoint, **layout)
        else:
            est.fit(
                spec.data_url,
                checkpoint=checkpoint,
                storage_options=options,
                **(spec.layout or {}),
            )
    if not est.converged_ and spec.max_iter:
        logger.warning("The fit did not converge in %d iterations (tol=%g).", est.n_iter_, est.tol)
    est.save(spec.model_url, overwrite=True, storage_options=options)
    bounds = [float(v) for v in est.lower_bounds_]
    summary = {
        "model_url": str(spec.model_url),
        "estimator": kind,
        "n_iter": int(est.n_iter_),
        "converged": bool(est.converged_),
        "lower_bound": finite_or_none(bounds[-1]) if bounds else None,
    }
    if kind == "classifier":
        rows = int(math.prod(_sample_shape(spec, layout, options)))
        summary["classes"] = [c.item() if hasattr(c, "item") else c for c in est.classes_]
        summary["n_unlabelled"] = int(est.n_unlabelled_)
        summary["n_labelled"] = rows - summary["n_unlabelled"]
        logger.info(
            "classifier of %d classes saved to %s (%d labelled, %d unlabelled rows, %d iterations)",
            len(est.classes_),
            spec.model_url,
            summary["n_labelled"],
            summary["n_unlabelled"],
            est.n_iter_,
        )
    else:
        summary["effective_n_components"] = int(est.effective_n_components_)
        logger.info(
            "Bayesian mixture saved to %s: %d of %d components effective (%d iterations)",
            spec.model_url,
            est.effective_n_components_,
            est.n_components,
            est.n_iter_,
        )
    return summary


def _sample_shape(spec: FitSpec, layout: dict, options) -> tuple:
    """The sample shape of the spec's data (metadata only)."""
    from diaggmm_dist.inputs import as_samples

    return as_samples(spec.data_url, storage_options=options, **layout).array.shape[:-1]
