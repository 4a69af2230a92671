"""``python -m diaggmm_dist.cli``: the ``diaggmm`` command."""

import sys

from . import main

sys.exit(main())
