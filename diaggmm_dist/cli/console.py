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

    The progress bar lives on one stderr line that is erased before anything else is
    printed and redrawn after, so the two never interleave on a terminal.
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


class PassBar:
    """A text bar on stderr, one step per EM pass, redrawn twice a second (only on a terminal)."""

    WIDTH = 24

    def __init__(self, console, total, label="EM"):
        self.console, self.total, self.label = console, max(int(total), 1), label
        self.done = 0
        self.lower_bound = self.change = self.model = None
        self.pass_start = time.monotonic()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="diaggmm-progress", daemon=True)

    def __enter__(self):
        with self.console.lock:
            self.console.bar = self
            self.draw()
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(timeout=2)
        with self.console.lock:
            self.erase()
            self.console.bar = None

    def _run(self):
        while not self.stop.wait(0.5):
            with self.console.lock:
                self.draw()

    def update(self, iteration, lower_bound, change, model=None):
        """Show ``iteration`` done.

        ``model`` names whose lower bound it is, when models run side by side.
        """
        with self.console.lock:
            self.done = min(iteration, self.total)
            self.lower_bound, self.change, self.model = lower_bound, change, model
            self.pass_start = time.monotonic()
            self.draw()

    def render(self):
        filled = int(self.WIDTH * self.done / self.total)
        text = (
            f"{self.label} [{'#' * filled}{'.' * (self.WIDTH - filled)}] {self.done}/{self.total}"
        )
        if self.lower_bound is None:
            text += "  initializing"
        else:
            named = "" if self.model is None else f"  {self.model}"
            text += f"{named}  lower bound {self.lower_bound:.6f}  delta {_signed(self.change)}"
        return text + f"  (pass {time.monotonic() - self.pass_start:.1f} s)"

    def draw(self):
        self.console.err.write("\r" + self.render() + "\033[K")
        self.console.err.flush()

    def erase(self):
        self.console.err.write("\r\033[K")
        self.console.err.flush()


def _signed(value):
    return f"{value:+.3e}" if value is not None and math.isfinite(value) else "n/a"


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
