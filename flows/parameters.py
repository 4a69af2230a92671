"""The flows' parameter choices (``Literal``) and help (pydantic ``Field`` descriptions).

Prefect builds each deployment's parameter schema from the flows' signatures: the UI shows a
``Literal`` as a menu of its choices and a ``Field``'s description as help, and a run with a
value outside the choices (a wrong ``criterion``, ``mode``, ``dtype`` or ``init_params``) is
refused when it is submitted (deployments enforce their schema) or called (Prefect validates
a flow's parameters). Prefect 3 reads a description only from a ``Field`` given as the
default (``x: int = Field(1, description=...)``), not from ``Annotated``: the flows give
their defaults that way, and a call through the flow gets the plain default.
"""

from __future__ import annotations

from typing import Literal

Criterion = Literal["bic", "aic", "heldout"]
Mode = Literal["refit", "online"]
InitParams = Literal["kmeans", "k-means++", "random", "random_from_data", "split"]
Dtype = Literal["float32", "float64"]

#: The flows' dtype. The library's default is float64; the flows read large stores, and
#: float32 halves the bytes read and held. A fit that needs float64 asks for it.
DEFAULT_DTYPE: Dtype = "float32"

CRITERION = (
    "With several candidates: keep the lowest BIC or AIC on the fitted rows, or the highest "
    "mean log-likelihood on the held-out rows (heldout)."
)
MODE = (
    "refit: EM on the new data from the current model's parameters (or from scratch). "
    "online: one partial_fit per new partition, each read once."
)
INIT_PARAMS = "How the first parameters are chosen (as DiagGMM's init_params)."
DTYPE = (
    "Floating-point type of the data and statistics: float32 by default in the flows (half "
    "the bytes of the library's float64 default, for large stores)."
)
TOL = "Stop when the lower bound (mean log-likelihood per row) gains less than this."
MAX_ITER = "EM iterations at most."
RANDOM_STATE = "Seed of the initialization (None: a fresh one)."
SCHEDULER_ADDRESS = (
    "Dask scheduler (tcp:// or tls://); by default $DASK_SCHEDULER_ADDRESS, else a "
    "LocalCluster for this run."
)
SECONDS_PER_TASK = (
    "About how long one em-iterations task runs (its number of iterations is sized to it); "
    "0: one task per iteration."
)
STORAGE_OPTIONS = (
    "fsspec options for every URL of the run (endpoint, region, ...). Stored with the run's "
    "parameters: put credentials in a Secret block (storage_options_block)."
)
STORAGE_OPTIONS_BLOCK = (
    "Name of a Prefect Secret block holding a JSON object of fsspec options (credentials), "
    "merged under storage_options."
)
TLS_DIRECTORY = (
    "For a tls:// scheduler: a folder with ca.pem, cert.pem and key.pem (or a Kubernetes TLS "
    "Secret's files); by default dask's configuration."
)
