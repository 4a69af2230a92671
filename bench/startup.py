"""How fast ``diaggmm --help`` and a usage error return (issue 23, section 1: fast start-up).

Each command runs ``--repeats`` times in a fresh interpreter (``python -m diaggmm_dist``,
this checkout on ``PYTHONPATH``), alternating with the others so that a busy moment of a
shared VM hits all of them alike. Reported: the median and best wall seconds of

- ``python -c pass``: the interpreter alone, the floor;
- ``diaggmm --help`` and ``diaggmm fit`` without its arguments (a usage error, exit 2), as
  the command runs now: the package and the parser import neither dask nor scikit-learn;
- the same two "eager", as before issue 23: the interpreter first imports what the package
  and the CLI imported at start-up then (:mod:`diaggmm_dist.mixture`,
  :mod:`diaggmm_dist.selection`, :mod:`diaggmm_dist.cli.commands`: dask, distributed,
  scikit-learn, zarr, numba).

The target: ``--help`` and a usage error in well under a second (median < 0.5 s).

    python bench/startup.py              # ~1 min on the 2-core VM
    python bench/startup.py --quick      # seconds: checks the machinery only
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ROOT, machine_info, machine_line, write_json  # noqa: E402

#: What the package and the CLI imported at start-up before issue 23.
EAGER = (
    "import diaggmm_dist.mixture, diaggmm_dist.selection, diaggmm_dist.cli.commands; "
    "import sys; from diaggmm_dist.cli import main; sys.exit(main(sys.argv[1:]))"
)
TARGET_SECONDS = 0.5

COMMANDS = {
    "python -c pass": ["-c", "pass"],
    "diaggmm --help": ["-m", "diaggmm_dist", "--help"],
    "diaggmm fit (usage error)": ["-m", "diaggmm_dist", "fit"],
    "eager: diaggmm --help": ["-c", EAGER, "--help"],
    "eager: diaggmm fit (usage error)": ["-c", EAGER, "fit"],
}
EXPECTED_CODES = {"diaggmm fit (usage error)": 2, "eager: diaggmm fit (usage error)": 2}


def time_once(arguments: list[str], expected: int) -> float:
    """Wall seconds of one run of ``python ARGUMENTS`` in a fresh process."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, *arguments], env=env, capture_output=True, text=True, check=False
    )
    seconds = time.perf_counter() - start
    if done.returncode != expected:
        raise RuntimeError(f"{arguments} exited {done.returncode}: {done.stderr[-500:]}")
    return seconds


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--quick", action="store_true", help="3 repeats")
    args = parser.parse_args(argv)
    repeats = 3 if args.quick else args.repeats
    info = machine_info()
    print(machine_line(info))
    for arguments in COMMANDS.values():  # warm the page cache and the bytecode caches
        time_once(arguments, 2 if arguments[-1] == "fit" else 0)
    times = {name: [] for name in COMMANDS}
    for _ in range(repeats):
        for name, arguments in COMMANDS.items():
            times[name].append(time_once(arguments, EXPECTED_CODES.get(name, 0)))
    rows = [
        {
            "command": name,
            "median_seconds": statistics.median(values),
            "best_seconds": min(values),
            "runs": values,
        }
        for name, values in times.items()
    ]
    print(f"\n| command | median s | best s |  ({repeats} runs each)\n|---|---:|---:|")
    for row in rows:
        print(f"| {row['command']} | {row['median_seconds']:.3f} | {row['best_seconds']:.3f} |")
    slowest = max(
        row["median_seconds"] for row in rows if not row["command"].startswith(("eager", "py"))
    )
    result = {
        "machine": info,
        "repeats": repeats,
        "rows": rows,
        "target_seconds": TARGET_SECONDS,
        "slowest_median_seconds": slowest,
        "passed": slowest < TARGET_SECONDS,
    }
    path = write_json("startup.json", result)
    print(f"\nslowest median {slowest:.3f} s (target < {TARGET_SECONDS} s); wrote {path}")


if __name__ == "__main__":
    main()
