"""Worker-side logging of the LocalCluster that the command line starts for itself.

The worker processes of that cluster write to the command's stderr, where two records of
distributed's worker said nothing the command does not say better:

* "Compute Failed", with the task, the exception and the remote traceback, when a task fails
  (a corrupt chunk): the client re-raises the same exception, which the command reports in one
  line (``--debug``: with its traceback). It printed a screenful before that line.
* "Failed to communicate with scheduler during heartbeat", with a traceback, when a heartbeat
  is in flight as the cluster closes: the scheduler runs in the command's own process, so it
  is gone only because the command is closing the cluster (after a fit too).

:class:`QuietWorkerLogs` drops these two on the workers; every other record is kept.
"""

from __future__ import annotations

import logging

from distributed import WorkerPlugin

#: The logger of distributed's worker.
WORKER_LOGGER = "distributed.worker"

#: Starts of the worker records that are dropped (see the module's docstring).
DROPPED = ("Compute Failed", "Failed to communicate with scheduler during heartbeat")


class DroppedRecordsFilter(logging.Filter):
    """Drop the records of :data:`DROPPED`."""

    def filter(self, record):
        return not str(record.msg).startswith(DROPPED)


class QuietWorkerLogs(WorkerPlugin):
    """A worker plugin: :class:`DroppedRecordsFilter` on every worker, restarted ones too.

    Register it with ``client.register_plugin(QuietWorkerLogs())``, only on a cluster whose
    scheduler runs in the caller's process and whose workers write to the caller's terminal.
    """

    name = "diaggmm-quiet-worker-logs"

    def setup(self, worker):
        self._filter = DroppedRecordsFilter()
        logging.getLogger(WORKER_LOGGER).addFilter(self._filter)

    def teardown(self, worker):
        logging.getLogger(WORKER_LOGGER).removeFilter(self._filter)
