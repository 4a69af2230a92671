"""The store of a ``BayesianDiagGMM`` (``BayesianDiagGMM.save``): its posterior and priors.

:func:`write_bayesian` writes a :class:`BayesianRecord` and :func:`read_bayesian` reads one
back, validated; :mod:`diaggmm_dist.persistence_models` converts the estimator.

Layout (``format`` ``diaggmm-dist-bayesian-model``, ``format_version`` 1)::

    model.zarr/
        weight_concentration    (K,)     float64   Dirichlet distribution prior: the
                                                   Dirichlet's parameters; or, for the
        weight_concentration_a  (K,)     float64   Dirichlet process, the stick-breaking
        weight_concentration_b  (K,)     float64   Betas' (a_k, b_k) (scikit-learn's pair)
        mean_precision          (K,)     float64   β_k
        means                   (K, D)   float64   m_k
        degrees_of_freedom      (K,)     float64   ν_k
        covariances             (K, D)   float64   the Wishart scale over ν_k
        mean_prior              (D,)     float64   m₀ as used (the data mean by default)
        covariance_prior        (D,)     float64   ψ₀ as used (the data variance by default)
        feature                 (D,)     string    only for named features (the coordinate)
        zarr.json      attributes: format, format_version, n_components, n_features,
                       feature_names, weight_concentration_prior_type, params (every other
                       constructor parameter, as given: a RandomState instance is stored as
                       null), priors ({"weight_concentration", "mean_precision",
                       "degrees_of_freedom"}: the scalar priors as used), n_iter, converged,
                       lower_bound, lower_bounds, input_layout, library_version, checksums;
                       consolidated_metadata

The weights, precisions and effective components are derived from the posterior at load,
by the code that derives them after a fit, so they are the same to the bit. The arrays are
written as DiagGMM's (:mod:`.model_store`): one raw chunk each, a NaN fill value, dimension
names (``component``, ``feature``) for ``xr.open_zarr``, checksums of every array and of the
attributes. Loading reads every file with a size bound and checks every field: the format,
JSON types, the settings by the estimator's own checks, shapes, finiteness, concentrations,
mean precisions and variances > 0, degrees of freedom > n_features − 1, then the checksums;
anything else is a :class:`~.model_checks.ModelStoreError` naming the file and the field.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np

from ..bayesian_mstep import PRIOR_TYPES, Posterior, Priors
from ..locations import Location, location
from ..validation import is_int
from .estimator_store import (
    ARRAY_VERSION,
    check_param_types,
    checked_value,
    root_attributes,
    verify_checksums,
    write_store,
)
from .model_checks import ModelStoreError, is_number, shorten
from .model_files import StoreFiles, check_feature_coordinate, read_model_array
from .model_record import ATTRIBUTES, is_name_list

__all__ = [
    "BayesianRecord",
    "check_posterior_arrays",
    "checked_scalar_priors",
    "posterior_arrays",
    "read_bayesian",
    "write_bayesian",
]

FORMAT = "diaggmm-dist-bayesian-model"
FORMAT_VERSION = 1
#: The attributes the checksum covers.
BAYESIAN_ATTRIBUTES = (
    "format",
    "format_version",
    "library_version",
    "n_components",
    "n_features",
    "feature_names",
    "weight_concentration_prior_type",
    "params",
    "priors",
    "n_iter",
    "converged",
    "lower_bound",
    "lower_bounds",
    "input_layout",
)
SCALAR_PRIORS = ("weight_concentration", "mean_precision", "degrees_of_freedom")


@dataclass(frozen=True)
class BayesianRecord:
    """A fitted ``BayesianDiagGMM`` as its store holds it: arrays and JSON values.

    Parameters
    ----------
    settings : dict
        The constructor parameters but ``n_components`` and
        ``weight_concentration_prior_type`` (the posterior's), as JSON values.
    posterior : Posterior
    priors : Priors
    n_iter : int
    converged : bool
    lower_bound : float
    lower_bounds : list of float
    feature_names : list of str, optional
    input_layout : dict, optional
    """

    settings: dict
    posterior: Posterior
    priors: Priors
    n_iter: int
    converged: bool
    lower_bound: float
    lower_bounds: list
    feature_names: list | None = None
    input_layout: dict | None = None

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays to store, by name."""
        return {
            **posterior_arrays(self.posterior),
            "mean_prior": self.priors.mean,
            "covariance_prior": self.priors.covariance,
        }


def posterior_arrays(p: Posterior) -> dict[str, np.ndarray]:
    """The arrays of the posterior ``p``, by their stored names (also a checkpoint's)."""
    if p.prior_type == "dirichlet_process":
        a, b = p.weight_concentration
        arrays = {"weight_concentration_a": a, "weight_concentration_b": b}
    else:
        arrays = {"weight_concentration": p.weight_concentration}
    return {
        **arrays,
        "mean_precision": p.mean_precision,
        "means": p.means,
        "degrees_of_freedom": p.degrees_of_freedom,
        "covariances": p.covariances,
    }


def write_bayesian(
    record: BayesianRecord, where: str | os.PathLike | Location, overwrite: bool = False
) -> None:
    """Write ``record`` as a Zarr v3 group at ``where`` (root zarr.json last).

    Raises
    ------
    FileExistsError
        A store is at ``where`` and ``overwrite`` is False.
    """
    p, priors = record.posterior, record.priors
    attributes = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "n_components": int(p.means.shape[0]),
        "n_features": int(p.means.shape[1]),
        "feature_names": record.feature_names,
        "weight_concentration_prior_type": p.prior_type,
        "params": record.settings,
        "priors": {name: float(getattr(priors, name)) for name in SCALAR_PRIORS},
        "n_iter": record.n_iter,
        "converged": record.converged,
        "lower_bound": record.lower_bound,
        "lower_bounds": record.lower_bounds,
        "input_layout": record.input_layout,
    }
    write_store(
        where, attributes, record.arrays(), BAYESIAN_ATTRIBUTES, overwrite, record.feature_names
    )


def _positive(arrays: Mapping[str, np.ndarray], names, where: str, above: float = 0.0) -> None:
    for name in names:
        bad = ~(arrays[name] > above)
        if bad.any():
            raise ModelStoreError(
                f"{where}: array {name!r} has {int(bad.sum())} value(s) <= {above:g}."
            )


def _non_negative(arrays: Mapping[str, np.ndarray], name: str, where: str) -> None:
    bad = ~(arrays[name] >= 0.0)
    if bad.any():
        raise ModelStoreError(f"{where}: array {name!r} has {int(bad.sum())} value(s) < 0.")


def check_posterior_arrays(arrays, prior_type, d, where):
    """Raise ModelStoreError unless the posterior's (and priors') arrays are in their domains:
    concentrations, mean precisions and variances > 0 (precisions finite), ν > d − 1, the
    covariance prior >= 0."""
    concentrations = (
        ("weight_concentration_a", "weight_concentration_b")
        if prior_type == "dirichlet_process"
        else ("weight_concentration",)
    )
    _positive(arrays, (*concentrations, "mean_precision"), where)
    # the default prior is the data's variance: 0 for a constant feature (scikit-learn's too)
    _non_negative(arrays, "covariance_prior", where)
    _positive(arrays, ("degrees_of_freedom",), where, above=d - 1.0)
    _positive(arrays, ("covariances",), where)
    with np.errstate(over="ignore", divide="ignore"):
        infinite = ~np.isfinite(1.0 / np.sqrt(arrays["covariances"]))
    if infinite.any():
        raise ModelStoreError(
            f"{where}: array 'covariances' has {int(infinite.sum())} value(s) so small that "
            "their precisions overflow."
        )


def checked_scalar_priors(attrs, d, where):
    def valid(value):
        return (
            isinstance(value, dict)
            and set(value) == set(SCALAR_PRIORS)
            and all(is_number(v) and math.isfinite(v) and v > 0 for v in value.values())
        )

    priors = checked_value(
        attrs, "priors", valid, f"map {list(SCALAR_PRIORS)} to finite numbers > 0", where
    )
    if not priors["degrees_of_freedom"] > d - 1.0:
        raise ModelStoreError(
            f"{where}, zarr.json: attribute 'priors': degrees_of_freedom must be > n_features - 1 "
            f"({d - 1}), found {priors['degrees_of_freedom']!r}."
        )
    return priors


def read_bayesian(
    where: str | os.PathLike | Location,
    names: tuple[str, ...],
    check_settings: Callable[[dict], None],
) -> BayesianRecord:
    """Read and validate the ``BayesianDiagGMM`` store at ``where``.

    Parameters
    ----------
    where : str, os.PathLike, Location or zarr.abc.store.Store
    names : tuple of str
        The names ``params`` must hold (the constructor's, but ``n_components`` and
        ``weight_concentration_prior_type``).
    check_settings : callable
        Given every constructor parameter (a dict) and the number of features, raises
        ``ValueError`` or ``TypeError`` for an invalid one: the estimator's own checks.

    Returns
    -------
    BayesianRecord

    Raises
    ------
    FileNotFoundError
        Nothing is stored at ``where``.
    ModelStoreError
        Not a valid store of a ``BayesianDiagGMM``; the message names the file and the field.
    """
    files = StoreFiles(location(where), f"model {location(where).url!r}")
    where = files.where
    attrs = root_attributes(files, where, FORMAT, (FORMAT_VERSION,))
    k = checked_value(attrs, "n_components", lambda v: is_int(v) and v >= 1, "be >= 1", where)
    d = checked_value(attrs, "n_features", lambda v: is_int(v) and v >= 1, "be >= 1", where)
    prior_type = checked_value(
        attrs,
        "weight_concentration_prior_type",
        lambda v: v in PRIOR_TYPES,
        f"be one of {list(PRIOR_TYPES)}",
        where,
    )
    feature_names = checked_value(
        attrs,
        "feature_names",
        lambda v: v is None or (is_name_list(v, d) and all(isinstance(n, str) for n in v)),
        f"be null or n_features ({d}) strings",
        where,
    )
    params = checked_value(
        attrs,
        "params",
        lambda v: isinstance(v, dict) and set(v) == set(names),
        f"map exactly {sorted(names)} to the constructor's values",
        where,
    )
    check_param_types(params, where)
    try:
        check_settings(
            {**params, "n_components": k, "weight_concentration_prior_type": prior_type}, d
        )
    except (TypeError, ValueError) as err:
        raise ModelStoreError(
            f"{where}, zarr.json: attribute 'params': a setting is invalid: {shorten(err, 300)}"
        ) from None
    priors = checked_scalar_priors(attrs, d, where)
    values = {
        name: checked_value(attrs, name, *ATTRIBUTES[name][:2], where)
        for name in ("n_iter", "converged", "lower_bound", "lower_bounds")
    }
    layout_valid, layout_expected, _ = ATTRIBUTES["input_layout"]
    layout = checked_value(attrs, "input_layout", layout_valid, layout_expected, where)

    shapes = {
        "mean_precision": (k,),
        "means": (k, d),
        "degrees_of_freedom": (k,),
        "covariances": (k, d),
        "mean_prior": (d,),
        "covariance_prior": (d,),
    }
    if prior_type == "dirichlet_process":
        shapes.update(weight_concentration_a=(k,), weight_concentration_b=(k,))
    else:
        shapes.update(weight_concentration=(k,))
    arrays = {
        name: read_model_array(files, name, shape, ARRAY_VERSION) for name, shape in shapes.items()
    }
    check_posterior_arrays(arrays, prior_type, d, where)
    verify_checksums(attrs, arrays, where, BAYESIAN_ATTRIBUTES)
    if feature_names is not None:
        check_feature_coordinate(files, feature_names)
    concentration = (
        (arrays["weight_concentration_a"], arrays["weight_concentration_b"])
        if prior_type == "dirichlet_process"
        else arrays["weight_concentration"]
    )
    return BayesianRecord(
        settings=params,
        posterior=Posterior(
            prior_type,
            concentration,
            arrays["mean_precision"],
            arrays["means"],
            arrays["degrees_of_freedom"],
            arrays["covariances"],
        ),
        priors=Priors(
            prior_type,
            float(priors["weight_concentration"]),
            float(priors["mean_precision"]),
            arrays["mean_prior"],
            float(priors["degrees_of_freedom"]),
            arrays["covariance_prior"],
        ),
        n_iter=values["n_iter"],
        converged=values["converged"],
        lower_bound=float(values["lower_bound"]),
        lower_bounds=[float(v) for v in values["lower_bounds"]],
        feature_names=feature_names,
        input_layout=layout,
    )


def record_settings_names(defaults: Mapping[str, Any]) -> tuple[str, ...]:
    """The names ``params`` holds: the constructor's, but those stored on their own."""
    return tuple(
        n for n in defaults if n not in ("n_components", "weight_concentration_prior_type")
    )
