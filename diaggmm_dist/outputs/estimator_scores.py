"""Scores of a ``BayesianDiagGMM`` or a ``DiagGMMClassifier``, written like ``DiagGMM``'s.

A Bayesian mixture writes the store a ``DiagGMM`` writes (``labels``: its effective
components only, as its ``predict``; ``max_resp``: that component's responsibility;
``log_likelihood``: its ``score_samples``), through the same writers: :func:`scored_model`
gives it their ``score_rows``. A classifier writes a store of the same arrays and
conventions (-1 unscored, -2 never written, every chunk written, one output chunk per input
chunk) whose ``labels`` are class codes: the index of the row's class in the group's
``classes`` attribute (the labels as JSON values, integers or strings), with CF
``flag_values``/``flag_meanings`` naming them; ``max_resp`` is the predicted class's
probability (``predict_proba``'s) and ``log_likelihood`` is ``log p(x)`` under the class
mixtures (:func:`write_class_scores`). Gridded data gives a label map with the data's sample
dimensions and coordinates, as for a ``DiagGMM``. docs/formats.md describes both stores.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

__all__ = ["class_scores", "is_classifier", "scored_model", "write_class_scores"]


class _BayesianScores:
    """A ``BayesianDiagGMM`` seen by the score writers: ``score_rows`` as ``DiagGMM``'s.

    Every other attribute is the model's own.
    """

    def __init__(self, model):
        self._model = model

    def __getattr__(self, name):
        return getattr(self._model, name)

    def score_rows(self, X, **read):
        """Labels (int16), the label's responsibility (float32) and ``log p(x)`` per row.

        Labels are ``predict``'s (effective components only); the responsibility is the
        largest among the effective components, the chosen one's.
        """
        import dask.array as da

        from .. import engine

        model = self._model
        samples = model._prediction_samples(
            X,
            read.get("storage_options"),
            "score_rows",
            read.get("feature_dim"),
            read.get("features"),
            read.get("columns"),
        )
        labels = model._map(samples, "labels")
        proba = model._map(samples, "proba")
        effective = np.flatnonzero(model.effective_components_)
        max_resp = da.max(proba[..., effective], axis=-1)
        log_likelihood = model._map(samples, "log_likelihood")
        if samples.in_memory:  # one computation for the three
            labels, max_resp, log_likelihood = engine.compute(labels, max_resp, log_likelihood)
        return (
            samples.wrap(labels.astype(np.int16), "labels", model.n_components),
            samples.wrap(max_resp.astype(np.float32), "max_resp"),
            samples.wrap(log_likelihood, "log_likelihood"),
        )


def is_classifier(model: Any) -> bool:
    """Whether ``model`` is a ``DiagGMMClassifier`` (its predictions are classes).

    Parameters
    ----------
    model : DiagGMM, BayesianDiagGMM or DiagGMMClassifier

    Returns
    -------
    bool
    """
    from ..classifier import DiagGMMClassifier

    return isinstance(model, DiagGMMClassifier)


def scored_model(model: Any) -> Any:
    """``model`` as the score writers take it: a ``DiagGMM`` as it is, a Bayesian one adapted.

    Parameters
    ----------
    model : DiagGMM or BayesianDiagGMM

    Returns
    -------
    object
        Something with ``score_rows`` and the model's attributes.
    """
    from ..bayesian import BayesianDiagGMM

    return _BayesianScores(model) if isinstance(model, BayesianDiagGMM) else model


def _class_summary(joint):
    """Per row: the class code (-1 unscored), its probability and ``log p(x)``, from
    ``log p(x, class)``: the same operations as the classifier's ``predict`` and
    ``predict_proba``, so the values are theirs bit for bit.
    """
    from scipy.special import logsumexp

    scored = np.isfinite(joint).any(axis=-1)
    filled = np.where(np.isnan(joint), -np.inf, joint)
    code = np.argmax(filled, axis=-1)
    total = logsumexp(joint, axis=-1)
    best = np.take_along_axis(joint, code[..., None], axis=-1)[..., 0]
    out = np.empty(joint.shape[:-1] + (3,))
    out[..., 0] = np.where(scored, code, -1)
    out[..., 1] = np.where(scored, np.exp(best - total), np.nan)
    out[..., 2] = np.where(scored, total, np.nan)
    return out


def class_flag_meanings(classes: Any) -> str:
    """CF ``flag_meanings`` of the class codes: ``unscored`` then one word per class.

    Parameters
    ----------
    classes : array-like
        The classifier's ``classes_`` (integers or strings).

    Returns
    -------
    str
        Blank-separated words, ``class_<label>`` with non-word characters made ``_``.
    """
    words = [re.sub(r"\W+", "_", str(label)).strip("_") or "class" for label in classes]
    return " ".join(["unscored"] + [f"class_{word}" for word in words])


def class_score_attributes(classes: Any) -> dict[str, dict]:
    """The CF attributes of a classifier's score arrays (the labels' flags name the classes).

    Parameters
    ----------
    classes : array-like
        The classifier's ``classes_``.

    Returns
    -------
    dict
        ``labels``, ``max_resp``, ``log_likelihood``: each array's attributes.
    """
    from .written import NOT_WRITTEN_COMMENT

    n = len(classes)
    return {
        "labels": {
            "long_name": "class code: index into the classes attribute",
            "valid_min": 0,
            "valid_max": n - 1,
            "flag_values": list(range(-1, n)),
            "flag_meanings": class_flag_meanings(classes),
            "classes": [label.item() if hasattr(label, "item") else label for label in classes],
            "comment": NOT_WRITTEN_COMMENT,
        },
        "max_resp": {"long_name": "probability of the predicted class", "units": "1"},
        "log_likelihood": {"long_name": "log-likelihood under the class mixtures", "units": "1"},
    }


def class_scores(model: Any, samples: Any) -> tuple:
    """Lazy class codes (int16), class probabilities (float32) and ``log p(x)`` of ``samples``.

    Parameters
    ----------
    model : DiagGMMClassifier
        Fitted.
    samples : Samples
        The data, read with the model's layout.

    Returns
    -------
    tuple of dask.array.Array
        Shaped like the samples' sample axes, chunked like them.
    """
    from ..classifier_rows import class_log_joint

    joint, _ = class_log_joint(model, samples, None, {})
    summary = joint.map_blocks(_class_summary, chunks=joint.chunks[:-1] + ((3,),), dtype=np.float64)
    return (
        summary[..., 0].astype(np.int16),
        summary[..., 1].astype(np.float32),
        summary[..., 2],
    )


def write_class_scores(
    model: Any,
    samples: Any,
    url: Any,
    *,
    overwrite: bool = False,
    storage_options: dict | None = None,
) -> str:
    """Write a classifier's scores of ``samples`` to the Zarr group at ``url``.

    Rows give the arrays ``labels``, ``max_resp`` and ``log_likelihood`` with the dimension
    ``row``; gridded samples a label map with their sample dimensions and coordinates.
    Every chunk is written (``labels`` has the Zarr fill value -2: a lost chunk is found).

    Parameters
    ----------
    model : DiagGMMClassifier
        Fitted.
    samples : Samples
        The data, read with the model's layout and checked against its features.
    url : str, os.PathLike or Location
        The group to write.
    overwrite : bool, default=False
        Replace an existing group.
    storage_options : dict, optional
        fsspec options for ``url``.

    Returns
    -------
    str
        The output's URL.
    """
    import dask.array as da

    from .. import engine
    from ..locations import location
    from ..stores.zarr_groups import (
        DATA_COMPRESSORS,
        consolidate_metadata,
        write_atomically,
        write_group_atomically,
    )
    from .scores import ROW_DIM, SCORE_ARRAYS
    from .written import NOT_WRITTEN

    where = location(url, storage_options)
    classes = [v.item() if hasattr(v, "item") else v for v in model.classes_]
    attributes = class_score_attributes(model.classes_)
    group_attrs = {
        "estimator": "DiagGMMClassifier",
        "classes": classes,
        "model_fingerprint": getattr(model, "data_fingerprint_", None),
    }
    if samples.template is not None:  # a label map, with the data's coordinates
        import xarray as xr

        from ..classifier_rows import wrap_classes

        arrays = class_scores(model, samples)
        variables = {}
        for name, array in zip(SCORE_ARRAYS, arrays):
            variables[name] = wrap_classes(model.classes_, samples, array, "labels").rename(name)
            variables[name].attrs = attributes[name]
        result = xr.Dataset(variables)
        result.attrs = {"title": "diaggmm-dist label map", "Conventions": "CF-1.8", **group_attrs}
        result["labels"].encoding["fill_value"] = NOT_WRITTEN

        def write_to(store):
            result.to_zarr(store, mode="w", consolidated=False, write_empty_chunks=True)
            consolidate_metadata(store)  # last: after the arrays and attributes

        write_atomically(where, write_to, overwrite)
        return where.url
    rows = samples.array
    arrays = [da.asarray(a) for a in class_scores(model, samples)]
    if len(set(rows.chunks[0][:-1])) > 1:  # Zarr chunks must be regular
        arrays = [a.rechunk({0: max(rows.chunks[0])}) for a in arrays]
    chunk_rows = arrays[0].chunks[0][0]

    def write(group):
        targets = [
            group.create_array(
                name,
                shape=array.shape,
                dtype=array.dtype,
                chunks=(chunk_rows,),
                fill_value=NOT_WRITTEN if name == "labels" else np.nan,
                compressors=DATA_COMPRESSORS,
                config={"write_empty_chunks": True},  # an absent chunk was lost
                dimension_names=(ROW_DIM,),
                attributes=attributes[name],
            )
            for name, array in zip(SCORE_ARRAYS, arrays)
        ]
        engine.compute(da.store(arrays, targets, lock=False, compute=False))
        group.attrs.update(  # last: marks the group complete
            {**group_attrs, "n_rows": int(rows.shape[0]), "arrays": list(SCORE_ARRAYS)}
        )

    write_group_atomically(where, write, overwrite)
    return where.url
