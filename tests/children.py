"""Child processes the tests kill: SIGKILL a child once it has reached a given point."""

from __future__ import annotations

import os
import signal
import time

import pytest


def sigkill_when(child, ready, what="its mark", poll=0.02) -> None:
    """Wait until ``ready()`` is true, then SIGKILL ``child`` and check it died of it.

    The test fails with the child's stderr if it ends first; the child is killed and its pipes
    closed whatever happens.
    """
    try:
        while not ready():
            if child.poll() is not None:
                stderr = child.stderr.read() if child.stderr else ""
                pytest.fail(f"the child ended (code {child.returncode}) before {what}:\n{stderr}")
            time.sleep(poll)
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait() == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        for pipe in (child.stdout, child.stderr):
            if pipe is not None:
                pipe.close()
