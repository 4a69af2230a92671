"""MixtureBase: what DiagGMM and BayesianDiagGMM share is inherited, and names the real class."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import DensityMixin

from diaggmm_dist import BayesianDiagGMM, DiagGMM
from diaggmm_dist.mixture_base import MixtureBase

X = np.array([[0.0, 0.1], [0.2, 0.0], [0.1, 0.3], [5.0, 5.1], [5.2, 4.9], [4.9, 5.0]] * 5)
SHARED = ("predict_proba", "score_samples", "score", "fit_predict", "sample")


class MyGMM(DiagGMM):
    """A user's subclass: the messages name it."""


@pytest.mark.parametrize("cls", [DiagGMM, BayesianDiagGMM])
def test_the_shared_methods_are_inherited_not_borrowed(cls):
    assert issubclass(cls, MixtureBase)
    for name in SHARED:
        assert name not in vars(cls) and getattr(cls, name) is getattr(MixtureBase, name)
    # the base comes before scikit-learn's mixin: its score, not DensityMixin's (which is a stub)
    assert cls.__mro__.index(MixtureBase) < cls.__mro__.index(DensityMixin)
    assert cls.score is not DensityMixin.score


@pytest.mark.parametrize(
    ("model", "method"),
    [
        (BayesianDiagGMM(n_components=2, random_state=0), "predict_proba"),
        (BayesianDiagGMM(n_components=2, random_state=0), "score"),
        (MyGMM(2, random_state=0), "score_samples"),
        (DiagGMM(2, random_state=0), "predict_proba"),
    ],
)
def test_storage_option_errors_name_the_real_class(model, method):
    model.fit(X)
    where = f"storage_options for {type(model).__name__}.{method} "
    with pytest.raises(TypeError, match=f"^{where}"):
        getattr(model, method)(X, storage_options=["not", "a", "dict"])


def test_a_subclass_names_itself_in_fit_and_save_errors(tmp_path):
    with pytest.raises(TypeError, match=r"^storage_options for MyGMM\.fit "):
        MyGMM(2).fit(X, storage_options=1)
    with pytest.raises(TypeError, match=r"^storage_options for MyGMM\.load "):
        MyGMM.load(tmp_path / "none.zarr", storage_options=1)


@pytest.mark.parametrize("cls", [DiagGMM, BayesianDiagGMM])
def test_feature_errors_name_the_real_class(cls):
    model = cls(n_components=2, random_state=0).fit(X)
    with pytest.raises(ValueError, match=cls.__name__):
        model.predict_proba(X[:, :1])
