"""One source for every choice: the library's validation module owns the choice lists and the
checks of a choice of K, and the CLI, the flows and ``select_n_components`` use them."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest

from diaggmm_dist import validation
from diaggmm_dist.cli.parser import build_parser
from diaggmm_dist.selection import select_n_components
from diaggmm_dist.validation import (
    CRITERIA,
    DTYPES,
    INIT_PARAMS,
    check_candidates,
    check_criterion,
    check_heldout_fraction,
    check_selection,
)


def _option(parser, command, flag):
    (sub,) = [a for a in parser._actions if a.dest == "command"]
    (action,) = [a for a in sub.choices[command]._actions if flag in a.option_strings]
    return action


def test_the_cli_choices_are_the_library_s():
    parser = build_parser()
    assert tuple(_option(parser, "fit", "--init").choices) == INIT_PARAMS
    assert tuple(_option(parser, "fit", "--criterion").choices) == CRITERIA
    assert tuple(_option(parser, "fit", "--dtype").choices) == DTYPES


def test_no_other_module_holds_a_copy_of_a_choice_list():
    from diaggmm_dist import kernels, selection

    assert not hasattr(kernels, "MISSING") and not hasattr(selection, "CRITERIA")
    assert validation.MISSING == ("error", "drop", "marginalize")


@pytest.mark.parametrize(
    "candidates, error, message",
    [
        ([], ValueError, r"^candidates is empty"),
        ([2, 0], ValueError, r"^candidates must be integers >= 1; got \[0\]"),
        ([2, 2.5], ValueError, r"integers >= 1; got \[2.5\]"),
        ([2, True], ValueError, r"integers >= 1; got \[True\]"),
        ([2, 4, 2], ValueError, r"repeated values: it lists \[2\] more than once"),
        (3, TypeError, "must be a list of integers"),
    ],
)
def test_check_candidates_refuses(candidates, error, message):
    with pytest.raises(error, match=message):
        check_candidates(candidates)


def test_check_candidates_names_the_value_as_its_caller_does():
    assert check_candidates((np.int64(4), 2)) == [4, 2]
    assert all(type(value) is int for value in check_candidates((np.int64(4), 2)))
    with pytest.raises(ValueError, match=r"^--k must be integers >= 1"):
        check_candidates([0], name="--k")


@pytest.mark.parametrize("criterion", ["BIC", "loglik", None, ["bic"]])
def test_check_criterion_refuses(criterion):
    with pytest.raises(ValueError, match="criterion must be one of 'bic', 'aic', 'heldout'"):
        check_criterion(criterion)


@pytest.mark.parametrize("fraction", [1, 1.0, -0.1, float("nan"), True, "0.1", None])
def test_check_heldout_fraction_refuses(fraction):
    with pytest.raises(ValueError, match=r"heldout_fraction must be a number in \[0, 1\)"):
        check_heldout_fraction(fraction)


def test_check_selection_needs_held_out_rows_for_the_heldout_criterion():
    assert check_selection([2, 4], "heldout", 0.25) == [2, 4]
    assert check_selection([2, 4], "bic", 0) == [2, 4]
    with pytest.raises(ValueError, match="needs held-out rows"):
        check_selection([2, 4], "heldout", 0)


@pytest.mark.parametrize(
    "candidates, criterion, fraction, message",
    [
        ([2, 0], "bic", 0.1, r"integers >= 1; got \[0\]"),
        ([2, 4, 2], "bic", 0.1, r"lists \[2\] more than once"),
        ([2, 4], "loglik", 0.1, "criterion must be one of 'bic', 'aic', 'heldout'"),
        ([2, 4], "bic", 1.0, r"heldout_fraction must be a number in \[0, 1\)"),
        ([2, 4], "heldout", 0, "needs held-out rows"),
    ],
)
def test_the_library_and_the_flow_refuse_a_choice_alike(candidates, criterion, fraction, message):
    pytest.importorskip("prefect")
    from flows.train import check_choice

    X = np.zeros((10, 2))
    with pytest.raises(ValueError, match=message):
        select_n_components(X, candidates, criterion, heldout_fraction=fraction)
    with pytest.raises(ValueError, match=message):
        check_choice(candidates, criterion, fraction)


def test_the_flow_takes_one_number_or_a_list():
    pytest.importorskip("prefect")
    from flows.train import check_choice

    assert check_choice(3, "heldout", 0) is None  # one K: no selection, no held-out rows needed
    assert check_choice([3], "bic", 0.1) is None
    assert check_choice((2, 4), "aic", 0.1) == [2, 4]
    with pytest.raises(TypeError, match="an integer or a list of integers"):
        check_choice("3", "bic", 0.1)
    with pytest.raises(ValueError, match="n_components is an empty list"):
        check_choice([], "bic", 0.1)


@pytest.mark.parametrize(
    "k, message",
    [
        ("2,0", r"--k must be integers >= 1; got \[0\]"),
        ("2,4,2", r"--k has repeated values: it lists \[2\] more than once"),
        ("2,x", "expected an integer or a list like 2,4,8"),
    ],
)
def test_the_cli_refuses_a_choice_of_k_at_parsing(k, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["fit", "d", "--k", k, "--out", "m"])
    assert exit_.value.code == 2
    assert re.search(message, capsys.readouterr().err)


def test_python_dash_m_runs_the_command():
    done = subprocess.run(
        [sys.executable, "-m", "diaggmm_dist.cli", "--version"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0 and done.stdout.startswith("diaggmm "), done.stderr
