"""The flows' parameters: their choices (``Literal``), their help, and the docstrings made of it.

Each parameter's help is written once: as the description of its pydantic ``Field`` (a
parameter with a default: ``x: int = Field(1, description=...)``), or, for a required
parameter, in :func:`parameter_help` over the flow. From that one text,

- Prefect's parameter schema (``flow.parameters``, and the schema of every deployment made
  from the flow) carries it: the UI shows it as the parameter's help, a ``Literal`` as a menu
  of its choices, and a run with a value outside the choices (a wrong ``criterion``, ``mode``,
  ``dtype`` or ``init_params``) is refused when it is submitted (deployments enforce their
  schema) or called (Prefect validates a flow's parameters);
- the flow's docstring gets its numpydoc ``Parameters`` section (what ``help()`` and the API
  reference show).

Prefect 3 reads a description only from a ``Field`` given as the default, not from
``Annotated``, and a flow called directly gets the ``Field``'s plain default. A required
parameter stays without a default in the function (a ``Field`` there would be passed as the
value of a call that leaves it out): :func:`parameter_help` gives it a ``Field`` in the
signature Prefect reads from the flow object only.

A new parameter of a flow is one line: ``name: type = Field(default, description=...)``.
"""

from __future__ import annotations

import inspect
import textwrap
import types
import typing
from typing import Literal

__all__ = [
    "Criterion",
    "Mode",
    "InitParams",
    "Dtype",
    "Estimator",
    "PriorType",
    "DEFAULT_DTYPE",
    "parameter_help",
]

#: The choices of ``criterion`` (train): how one of several numbers of components is chosen.
Criterion = Literal["bic", "aic", "heldout"]
#: The choices of ``mode`` (retrain): a warm-started refit, or stepwise EM per partition.
Mode = Literal["refit", "online"]
#: The choices of ``init_params`` (train), as ``DiagGMM``'s.
InitParams = Literal["kmeans", "k-means++", "random", "random_from_data", "split"]
#: The choices of ``dtype`` (train).
Dtype = Literal["float32", "float64"]
#: The choices of ``estimator`` (train): maximum-likelihood EM, variational Bayes, a classifier.
Estimator = Literal["gmm", "bayesian", "classifier"]
#: The choices of ``weight_concentration_prior_type`` (train), as ``BayesianDiagGMM``'s.
PriorType = Literal["dirichlet_process", "dirichlet_distribution"]

#: The flows' dtype. The library's default is float64; the flows read large stores, and
#: float32 halves the bytes read and held. A fit that needs float64 asks for it.
DEFAULT_DTYPE: Dtype = "float32"

# ------------------------------------------------------- help of parameters of several flows
CRITERION = (
    "With several candidates: keep the lowest BIC or AIC on the fitted rows, or the highest "
    "mean log-likelihood on the held-out rows (``heldout``)."
)
MODE = (
    "``refit``: EM on ``data_url`` from the current model's parameters (or from scratch). "
    "``online``: one ``partial_fit`` per partition of ``data_url``, each read once; the data "
    "of earlier runs is never read again."
)
INIT_PARAMS = "How the first parameters are chosen (as ``DiagGMM``'s ``init_params``)."
DTYPE = (
    "Floating-point type of the data and statistics. The flows default to float32 (the "
    "library's default is float64): half the bytes read and held, for large stores."
)
TOL = "Stop when the lower bound (mean log-likelihood per row) gains less than this."
MAX_ITER = "EM iterations at most."
RANDOM_STATE = "Seed of the initialization (None: a fresh one)."
SCHEDULER_ADDRESS = (
    "Dask scheduler (``tcp://`` or ``tls://``); by default ``$DASK_SCHEDULER_ADDRESS``, else "
    "a LocalCluster for this run."
)
SECONDS_PER_TASK = (
    "About how long one ``em-iterations`` task should run: its number of iterations is this "
    "over the mean iteration time so far (the first task runs one iteration, to time it). "
    "Longer tasks amortize Prefect's cost per task; a failure still repeats at most one "
    "iteration. 0: one task per iteration."
)
STORAGE_OPTIONS = (
    "fsspec options for every URL of the run (endpoint, region, ...). They are stored with "
    "the flow run's parameters: put credentials in a Prefect ``Secret`` block instead "
    "(``storage_options_block``), or give the workers their own (environment variables, "
    "instance roles). The options travel with the tasks, and inside the library's dask graphs "
    "to the workers, where whoever can read the dask scheduler can see them; on shared "
    "clusters prefer roles on the workers."
)
STORAGE_OPTIONS_BLOCK = (
    "Name of a Prefect ``Secret`` block whose value is a JSON object of fsspec options (e.g. "
    '``{"key": ..., "secret": ...}``), read in the flow run and merged under '
    "``storage_options`` (whose values win)."
)
TLS_DIRECTORY = (
    "For a ``tls://`` scheduler: a folder holding the CA certificate and the client's "
    "certificate and key (``ca.pem``, ``cert.pem``, ``key.pem``, or a Kubernetes TLS Secret's "
    "``ca.crt``, ``tls.crt``, ``tls.key``), e.g. a mounted Secret; by default dask's "
    "configuration (``distributed.comm.tls.ca-file``, ``.client.cert``, ``.client.key``, or "
    "their ``DASK_DISTRIBUTED__COMM__TLS__...`` variables). A path only: the keys stay in the "
    "files, never in the flow run's parameters."
)


# ------------------------------------------------------------------------ the docstrings
def _type_name(annotation) -> str:
    """A parameter's type as numpydoc writes it: ``int or list of int``, ``{"a", "b"}``."""
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return "{" + ", ".join(f'"{choice}"' for choice in typing.get_args(annotation)) + "}"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(member) for member in typing.get_args(annotation))
    if origin is list:
        return f"list of {_type_name(typing.get_args(annotation)[0])}"
    if annotation is type(None):
        return "None"
    return getattr(annotation, "__name__", str(annotation))


def _entry(parameter: inspect.Parameter, default, text: str) -> str:
    """One entry of a numpydoc Parameters section."""
    kind = _type_name(parameter.annotation)
    if default is None and kind.endswith(" or None"):
        kind = kind.removesuffix(" or None") + ", optional"
    elif parameter.default is not inspect.Parameter.empty:
        kind += f', default="{default}"' if isinstance(default, str) else f", default={default!r}"
    body = textwrap.fill(
        " ".join(text.split()),
        width=96,
        initial_indent="    ",
        subsequent_indent="    ",
        break_long_words=False,
        break_on_hyphens=False,
    )
    return f"{parameter.name} : {kind}\n{body}"


def _with_section(doc: str, section: str) -> str:
    """``doc`` (a numpydoc docstring without Parameters) with ``section`` before its Returns."""
    doc = inspect.cleandoc(doc or "")
    if f"\n{section}\n" in doc:
        return doc + "\n"  # made from the same help (a copy of the flow: with_options)
    if "\nParameters\n----------\n" in doc:
        raise TypeError("the docstring has its own Parameters section: the help is generated")
    head, returns, tail = doc.partition("\nReturns\n-------\n")
    return f"{head.rstrip()}\n\n{section}\n\n{returns.lstrip()}{tail}".rstrip() + "\n"


def parameter_help(**required: str):
    """Decorator over ``@flow``: one help text per parameter, in the docstring and the UI.

    A parameter with a default has its help in its ``Field``; a required one has it here. The
    flow's docstring gets a numpydoc ``Parameters`` section of these texts (placed before its
    ``Returns``), and the flow object a signature in which every parameter has its ``Field``,
    so that Prefect's parameter schema (``flow.parameters``, and deployments' schemas) carries
    every description. Calls of the flow are unchanged (Prefect binds them to the function).
    A copy made by ``flow.with_options(...)`` keeps the docstring and the ``Field``s' help, not
    the required parameters' (apply ``parameter_help`` to the copy too).

    Parameters
    ----------
    **required : str
        The help of each required parameter, by name.

    Returns
    -------
    callable
        The decorator: takes the ``prefect.Flow``, returns it with the docstring and schema.

    Raises
    ------
    TypeError
        A parameter without help, help for a parameter the flow does not have (or that has a
        ``Field`` of its own), a default that is not a ``Field``, or a docstring that has its
        own Parameters section.
    """

    def decorate(flow):
        from prefect.utilities.callables import parameter_schema
        from pydantic import Field
        from pydantic.fields import FieldInfo

        signature = inspect.signature(flow.fn)
        where = f"flow {flow.name!r}"
        unknown = sorted(set(required) - set(signature.parameters))
        if unknown:
            raise TypeError(f"{where} has no parameter {', '.join(unknown)}")
        entries, parameters = [], []
        for parameter in signature.parameters.values():
            if isinstance(parameter.default, FieldInfo):
                if parameter.name in required:
                    raise TypeError(f"{where}: {parameter.name}'s help is in its Field")
                text, default = parameter.default.description, parameter.default.default
            elif parameter.default is inspect.Parameter.empty:
                text, default = required.get(parameter.name), None
            else:
                raise TypeError(
                    f"{where}: give {parameter.name} its default as Field(default, "
                    "description=...), so that its help reaches the Prefect UI"
                )
            if not text:
                raise TypeError(f"{where}: no help for the parameter {parameter.name}")
            entries.append(_entry(parameter, default, text))
            if parameter.default is inspect.Parameter.empty:  # required: a Field without default
                parameter = parameter.replace(default=Field(description=text))
            parameters.append(parameter)
        section = "Parameters\n----------\n" + "\n".join(entries)
        flow.__doc__ = flow.fn.__doc__ = _with_section(flow.fn.__doc__, section)
        # the signature Prefect's schemas are made from (inspect reads it before __wrapped__)
        flow.__signature__ = signature.replace(parameters=parameters)
        flow.parameters = parameter_schema(flow)
        return flow

    return decorate
