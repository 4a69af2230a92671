"""The input layout an estimator fits once and reads every later input with."""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..locations import StorageOptions
from .convert import as_samples
from .samples import Samples

#: The persisted form's keys: how to read the input (the model store keeps these).
LAYOUT_OPTIONS = ("feature_dim", "features", "columns")


def check_n_features(n_features: int, expected: int, owner: str) -> None:
    """Refuse input with another number of features than the model's.

    Raises
    ------
    ValueError
        ``n_features != expected`` (scikit-learn's wording first: its estimator checks look
        for it).
    """
    if n_features != expected:
        raise ValueError(
            f"X has {n_features} features, but {owner} is expecting {expected} "
            f"features as input: give the {expected} features the model was fitted on."
        )


@dataclass(frozen=True)
class InputLayout:
    """How a model reads its input: fitted by ``fit``, reused by everything that reads data.

    ``feature_dim``, ``features`` and ``columns`` say how to read the input (see
    :func:`~diaggmm_dist.inputs.as_samples`) and are what is persisted (:meth:`to_dict`);
    ``n_features`` and ``feature_names`` are what the fit saw, checked on every later input.
    ``sample_dims`` are the fit's sample dimensions, for information only: later input may
    have other sample dimensions (a map fitted on one grid predicts on another).
    """

    feature_dim: str | None = None
    features: list | None = None
    columns: list | None = None
    n_features: int | None = None
    feature_names: tuple | None = None
    sample_dims: tuple = ()

    @classmethod
    def from_dict(cls, options: dict | None, **fitted) -> InputLayout:
        """The layout persisted as ``options`` (see :meth:`to_dict`), plus what was fitted.

        Parameters
        ----------
        options : dict or None
            Any of ``feature_dim``, ``features`` and ``columns``; None or missing keys are
            the defaults.
        **fitted
            ``n_features``, ``feature_names`` or ``sample_dims``.

        Returns
        -------
        InputLayout
        """
        options = options or {}
        return cls(**{key: options.get(key) for key in LAYOUT_OPTIONS}, **fitted)

    @classmethod
    def of(cls, model) -> InputLayout:
        """The layout of a fitted model, from its public fitted attributes.

        Parameters
        ----------
        model : DiagGMM
            Reads ``input_layout_``, ``n_features_in_`` and ``feature_names_in_`` (each
            optional: a model made by ``from_sklearn`` has no input layout).

        Returns
        -------
        InputLayout
        """
        names = getattr(model, "feature_names_in_", None)
        return cls.from_dict(
            getattr(model, "input_layout_", None),
            n_features=getattr(model, "n_features_in_", None),
            feature_names=None if names is None else tuple(names),
        )

    def to_dict(self) -> dict:
        """The persisted form: ``{"feature_dim", "features", "columns"}``."""
        return {key: getattr(self, key) for key in LAYOUT_OPTIONS}

    def fitted(self, samples: Samples) -> InputLayout:
        """This layout with what a fit saw in ``samples`` (features, names, sample dims)."""
        names = samples.feature_names
        return replace(
            self,
            n_features=samples.n_features,
            feature_names=None if names is None else tuple(names),
            sample_dims=tuple(samples.sample_dims),
        )

    def samples(
        self, X, chunk_size: int | None = None, storage_options: StorageOptions | None = None
    ) -> Samples:
        """``X`` read with this layout (:class:`Samples` are taken as they are).

        Parameters
        ----------
        X : any input :func:`~diaggmm_dist.inputs.as_samples` takes, or Samples
        chunk_size : int, optional
            Rows per chunk for in-memory input.
        storage_options : dict, optional
            fsspec options for a URL ``X`` (:func:`~diaggmm_dist.inputs.as_samples`).

        Returns
        -------
        Samples
        """
        if isinstance(X, Samples):
            return X
        return as_samples(X, chunk_size, **self.to_dict(), storage_options=storage_options)

    def check(self, samples: Samples, owner: str) -> None:
        """Refuse ``samples`` whose features differ from the fitted ones.

        The number of features must match; so must the names when both have names.

        Parameters
        ----------
        samples : Samples
        owner : str
            The model's class name, for the messages.

        Raises
        ------
        ValueError
            Another number of features, or other feature names.
        """
        check_n_features(samples.n_features, self.n_features, owner)
        known = self.feature_names
        if (
            known is not None
            and samples.feature_names is not None
            and list(known) != list(samples.feature_names)
        ):
            raise ValueError(
                f"The features differ from those seen in fit: got {list(samples.feature_names)}, "
                f"fitted on {list(known)}."
            )
