"""Child processes the tests kill: SIGKILL a child once it has reached a given point."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

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


#: The start of a child that fits with a checkpoint and parks (writes ``cfg["marker"]`` and
#: sleeps until SIGKILLed) where ``cfg["stop"]`` says: ``("pass", n)`` at the start of its n-th
#: data pass, ``("pointer", n)`` once its n-th checkpoint step is complete but the root's
#: pointer not yet moved to it. The test appends the fit itself (``cfg`` is its JSON argument).
PARKING_CHILD = r"""
import json, os, sys, time
from diaggmm_dist import engine
from diaggmm_dist.stores import checkpoint
import numpy as np

cfg = json.loads(sys.argv[1])
kind, number = cfg["stop"]


def park():
    with open(cfg["marker"] + ".partial", "w") as file:
        file.write("parked")
    os.replace(cfg["marker"] + ".partial", cfg["marker"])
    while True:
        time.sleep(3600)  # until the SIGKILL


passes, real_pass = [0], engine.pass_statistics
def pass_statistics(*args, **kwargs):
    passes[0] += 1
    if (kind, number) == ("pass", passes[0]):
        park()
    return real_pass(*args, **kwargs)
engine.pass_statistics = pass_statistics

saves, real_save = [0], checkpoint.Checkpoints.save
def save(self, states):
    saves[0] += 1
    return real_save(self, states)
checkpoint.Checkpoints.save = save

real_put_keys = checkpoint.put_keys
def put_keys(store, files):
    if (kind, number) == ("pointer", saves[0]) and "zarr.json" in files:
        park()  # the step is complete, the root's pointer not moved to it
    return real_put_keys(store, files)
checkpoint.put_keys = put_keys

"""


def kill_parked_child(script, stop, settings, data_path, url, folder) -> None:
    """Run ``script`` (:data:`PARKING_CHILD` and a fit) until it parks at ``stop``, SIGKILL it.

    The child fits with ``settings`` on the data saved at ``data_path``, checkpointing to
    ``url``; it imports this checkout's package.
    """
    import diaggmm_dist

    marker = Path(folder) / "parked"
    cfg = {
        "stop": list(stop),
        "settings": settings,
        "data": str(data_path),
        "checkpoint": str(url),
        "marker": str(marker),
    }
    package_root = str(Path(diaggmm_dist.__file__).parents[1])  # this checkout, in the child too
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([package_root, os.environ.get("PYTHONPATH", "")])
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script, json.dumps(cfg)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    sigkill_when(child, marker.exists, f"parking at {stop}")
