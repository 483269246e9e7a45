"""``python -m flmr``: the ``flmr`` command."""

import sys

from flmr.cli.main import main

sys.exit(main())
