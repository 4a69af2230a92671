"""``python -m diaggmm_dist``: the ``diaggmm`` command."""

import sys

from .cli import main

sys.exit(main())
