"""Console output of the ``diaggmm`` command: results, iteration lines and a progress bar.

Results and iteration lines go to stdout; the progress bar, warnings and errors to stderr.
"""

from __future__ import annotations

import collections
import logging
import math
import sys
import threading
import time
import warnings

#: The command's name, as it starts every warning and error line.
PROG = "diaggmm"


class Console:
    """stdout for results and iteration lines, stderr for the bar, warnings and errors.

    While a progress bar is shown (:class:`PassBar`), every line is printed with the bar
    cleared first and redrawn after, under one lock, so the two never interleave on a
    terminal.
    """

    def __init__(self, out=None, err=None, quiet=False):
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.quiet = quiet
        self.lock = threading.RLock()
        self.bar = None

    def print(self, text="", *, stream=None):
        stream = stream or self.out
        with self.lock:
            if self.bar is not None:
                self.bar.erase()
            print(text, file=stream, flush=True)
            if self.bar is not None:
                self.bar.draw()

    def warn(self, text):
        self.print(f"{PROG}: warning: {one_line(text)}", stream=self.err)

    def shows_bar(self) -> bool:
        """A bar is shown only on a terminal, and not with ``--quiet``."""
        isatty = getattr(self.err, "isatty", None)
        return not self.quiet and callable(isatty) and bool(isatty())


#: Seconds between two redraws of the bar as chunks finish, and of its clock meanwhile.
BAR_INTERVAL = 0.2

#: The bar's line: passes done (of the most), the chunks and rows of the running pass, its
#: rate and ETA, and the last lower bound (tqdm's ``bar_format``; ``{postfix}`` is ", ...").
BAR_FORMAT = "{desc} |{bar}| {n_fmt}/{total_fmt}{unit}, {rate_noinv_fmt}, ETA {remaining}{postfix}"


class PassBar:
    """The command's progress bar on stderr (tqdm), advanced within each pass.

    Used as a context: while it is open, the engine's passes tell it how many of their
    chunks (and rows) are done (:func:`diaggmm_dist.engine.progress.reporting`) and
    :class:`IterationPrinter` tells it each EM iteration's lower bound. The bar appears at
    the first pass; tqdm is imported only then. It shows
    ``EM 3/100 | chunks 6/10 |####   | 1.20M/2.00M rows, 3.10M rows/s, ETA 00:01, lower
    bound -1.234567 delta +1.234e-03``: EM iterations done of ``total``, the running pass's
    chunks, its rows, their rate, the pass's ETA and the last lower bound and its change.
    Without ``total`` (``predict``) the label stands alone.
    """

    def __init__(self, console, total=None, label="EM"):
        self.console, self.label = console, label
        self.total = None if total is None else max(int(total), 1)
        self.done = 0
        self.lower_bound = self.change = self.model = None
        self.chunks = None  # the running pass's PassProgress
        self.drawn = 0.0  # time.monotonic() of the last redraw for a chunk
        self.tqdm = None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="diaggmm-progress", daemon=True)

    def __enter__(self):
        from ..engine.progress import reporting  # here: --help imports no dask

        with self.console.lock:
            self.console.bar = self
        self.reporting = reporting(self.advance)
        self.reporting.__enter__()
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(timeout=2)
        self.reporting.__exit__(*exc)
        with self.console.lock:
            if self.tqdm is not None:
                self.tqdm.close()  # leave=False: the line is cleared
            self.console.bar = None

    def _run(self):  # the clock and the ETA move between chunks too, while a pass runs
        while not self.stop.wait(BAR_INTERVAL * 2.5):
            with self.console.lock:
                if self.chunks is not None and self.chunks.chunks_done < self.chunks.n_chunks:
                    self.draw()

    def advance(self, progress):
        """The engine's progress hook: a pass started, or chunks of it finished."""
        new_pass = progress.chunks_done == 0 or self.chunks is None
        ends = progress.chunks_done == progress.n_chunks
        now = time.monotonic()
        if not (new_pass or ends) and now - self.drawn < BAR_INTERVAL:
            self.chunks = progress  # drawn with the next chunk or tick: a chunk costs no more
            return
        with self.console.lock:
            self.drawn = now
            rows = progress.n_rows is not None  # else a computation's chunks, without rows
            count = progress.rows_done if rows else progress.chunks_done
            self.chunks = progress
            unit, total = (" rows", progress.n_rows) if rows else (" chunks", progress.n_chunks)
            if self.tqdm is None:
                from tqdm import tqdm  # here: only a command that shows a bar imports it

                self.tqdm = tqdm(
                    file=self.console.err,
                    total=total,
                    desc=self._description(),
                    unit=unit,
                    unit_scale=rows,
                    leave=False,
                    dynamic_ncols=True,
                    mininterval=BAR_INTERVAL,
                    bar_format=BAR_FORMAT,
                    postfix=self._postfix() or None,
                )
            self.tqdm.set_description_str(self._description(), refresh=False)
            self.tqdm.set_postfix_str(self._postfix(), refresh=False)
            if new_pass:
                self.tqdm.unit, self.tqdm.unit_scale = unit, rows
                self.tqdm.reset(total=total)
            self.tqdm.update(count - self.tqdm.n)
            if ends:
                self.tqdm.refresh()  # a pass's end is always shown, however quick

    def update(self, iteration, lower_bound, change, model=None):
        """Show ``iteration`` done.

        ``model`` names whose lower bound it is, when models run side by side.
        """
        with self.console.lock:
            self.done = iteration if self.total is None else min(iteration, self.total)
            self.lower_bound, self.change, self.model = lower_bound, change, model
            self.draw()

    def _description(self):
        head = self.label if self.total is None else f"{self.label} {self.done}/{self.total}"
        if self.chunks is not None and self.chunks.n_rows is not None:
            head += f" | chunks {self.chunks.chunks_done}/{self.chunks.n_chunks}"
        return head

    def _postfix(self):
        if self.lower_bound is None:
            return ""
        named = "" if self.model is None else f"{self.model} "
        return f"{named}lower bound {self.lower_bound:.6f} delta {_signed(self.change)}"

    def draw(self):
        if self.tqdm is not None:
            if self.chunks is not None:  # chunks told since the last redraw
                chunks = self.chunks
                self.tqdm.n = chunks.chunks_done if chunks.n_rows is None else chunks.rows_done
            self.tqdm.set_description_str(self._description(), refresh=False)
            self.tqdm.set_postfix_str(self._postfix(), refresh=False)
            self.tqdm.refresh()

    def erase(self):
        if self.tqdm is not None:
            self.tqdm.clear()


def _signed(value):
    return f"{value:+.3e}" if value is not None and math.isfinite(value) else "n/a"


def command_bar(args, console: Console):
    """The progress bar of a command (:class:`PassBar`), or a null context: none on a pipe or
    a file, with ``--quiet``, or for a command without passes (``info``)."""
    import contextlib

    if args.command not in ("fit", "predict") or not console.shows_bar():
        return contextlib.nullcontext()
    if args.command == "fit":
        return PassBar(console, args.max_iter, "EM")
    return PassBar(console, None, "predict")


class IterationPrinter(logging.Handler):
    """Turns the library's per-iteration log records into lines (and bar steps).

    The library logs one record per model per EM iteration, with the model's ``restart``
    index. Models fitted side by side (the restarts of ``--n-init``, the candidates of
    ``--k 2,4,8``) share every data pass, so a pass logs one record per model still running,
    in restart order, all with the same iteration number. Given ``labels`` (restart index ->
    name, see :func:`model_labels`), every line names its model; without, the records are
    one model's and the lines name none.
    """

    def __init__(self, console, quiet, labels=None):
        super().__init__(logging.INFO)
        self.console, self.quiet, self.labels = console, quiet, labels
        self.width = max(map(len, labels.values())) if labels else 0  # the columns line up
        self.iterations_run = collections.Counter()  # restart index -> iterations in this run
        self.first_iteration = (
            None  # of the first record: the one after the checkpoint's, if resumed
        )

    def emit(self, record):
        try:
            if getattr(record, "iteration", None) is None:
                self._message(record)
            else:
                self._iteration(record)
        except Exception:  # a display problem must never stop a fit
            self.handleError(record)

    def _message(self, record):
        if record.levelno >= logging.WARNING:
            self.console.warn(record.getMessage())
        elif not self.quiet:
            self.console.print(record.getMessage())

    def _iteration(self, record):
        restart = getattr(record, "restart", 0)
        if self.first_iteration is None:
            self.first_iteration = record.iteration
            if record.iteration > 1 and not self.quiet:
                self.console.print(
                    f"resumed from the checkpoint after iteration {record.iteration - 1}"
                )
        self.iterations_run[restart] += 1
        bar = self.console.bar
        if bar is not None:
            bar.update(record.iteration, record.lower_bound, record.change, self._label(restart))
        if not self.quiet:
            self.console.print(self._line(record, restart))

    def _label(self, restart):
        return None if not self.labels else self.labels.get(restart, f"model {restart}")

    def _line(self, record, restart):
        label = self._label(restart)
        named = "" if label is None else f"{label:<{self.width}}  "
        line = (
            f"iteration {record.iteration:4d}  {named}lower bound {record.lower_bound:.8f}  "
            f"delta {_signed(record.change):>10}  {record.seconds:.2f} s"
        )
        # Side by side, a converged model drops out of the next passes: say why.
        if label is not None and getattr(record, "converged", False):
            line += "  converged"
        return line


def model_labels(candidates: list[int], n_init: int) -> dict[int, str] | None:
    """Names of the models one fit runs side by side, by restart index; None for a single model.

    :func:`~diaggmm_dist.selection.select_n_components` gives the candidate at position ``i``
    the restart index ``i``; :meth:`DiagGMM.fit` numbers its restarts from 0 (shown from 1).
    """
    if len(candidates) > 1:
        return {index: f"K={k}" for index, k in enumerate(candidates)}
    if n_init > 1:
        return {restart: f"init {restart + 1}/{n_init}" for restart in range(n_init)}
    return None


class library_output:
    """Route the library logger and Python warnings to the console for the block's duration.

    ``labels``: names of the models fitted side by side, as :func:`model_labels` gives them.
    """

    def __init__(self, console, quiet, labels=None):
        self.console = console
        self.handler = IterationPrinter(console, quiet, labels)

    def __enter__(self):
        self.logger = logging.getLogger("diaggmm_dist")
        self.saved = (self.logger.level, self.logger.propagate, warnings.showwarning)
        self.logger.addHandler(self.handler)
        self.logger.setLevel(logging.INFO)
        self.logger.propagate = False

        def show(message, category, filename, lineno, file=None, line=None):
            self.console.warn(f"{message} ({category.__name__})")

        warnings.showwarning = show
        return self.handler

    def __exit__(self, *exc):
        self.logger.removeHandler(self.handler)
        self.logger.setLevel(self.saved[0])
        self.logger.propagate = self.saved[1]
        warnings.showwarning = self.saved[2]


def one_line(text) -> str:
    """``text`` (anything ``str`` takes) on one line, its runs of whitespace made one space."""
    return " ".join(str(text).split())
