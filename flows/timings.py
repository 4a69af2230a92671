"""Per-iteration rows of one ``em-iterations`` task run, kept across its attempts.

A retry resumes after the iterations a failed attempt checkpointed; their rows (lower bound,
change and time) are still reported. An attempt keeps its rows in memory; one that fails with a
retry to follow writes them, once, to a small JSON file named by the task run's id in the local
temporary folder (the attempts of one task run run in one process), and the task run removes
it when it ends. A row is a display record: a file that cannot be written or read loses
timings, never the fit.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path


class AttemptRows:
    """The rows of a task run's iterations, by iteration number, kept across its attempts.

    Parameters
    ----------
    task_run_id : str or None
        The task run's id (Prefect's ``TaskRunContext.task_run.id``); None outside a task run
        (the rows are then this call's only).
    """

    def __init__(self, task_run_id: str | None):
        self.path = None
        if task_run_id is not None:
            name = f"diaggmm-em-iterations-{task_run_id}.json"
            self.path = Path(tempfile.gettempdir()) / name
        self.rows = self._read()

    def _read(self) -> dict:
        if self.path is None:
            return {}
        try:
            stored = json.loads(self.path.read_text())
        except (OSError, ValueError):  # none yet (the first attempt), or unreadable
            return {}
        return {int(number): row for number, row in stored.items()}

    def add(self, row: dict) -> None:
        """Keep ``row`` (an iteration's ``iteration``, ``lower_bound``, ``change``, ``seconds``).

        Parameters
        ----------
        row : dict
            The row; its ``iteration`` is its key.
        """
        self.rows[int(row["iteration"])] = row

    def keep(self) -> None:
        """Write the rows for the next attempt of this task run (a failed attempt's last act)."""
        if self.path is None:
            return
        try:  # written whole and renamed into place: a reader never sees half a file
            handle, name = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
            with os.fdopen(handle, "w") as out:
                json.dump(self.rows, out)
            os.replace(name, self.path)
        except OSError:
            pass

    def between(self, first: int, last: int) -> list[dict]:
        """The rows of iterations ``first`` to ``last``, in order.

        Returns
        -------
        list of dict
            One row per iteration that an attempt of this task run did.
        """
        return [self.rows[number] for number in sorted(self.rows) if first <= number <= last]

    def forget(self) -> None:
        """Remove the file: no attempt follows."""
        if self.path is not None:
            self.path.unlink(missing_ok=True)
