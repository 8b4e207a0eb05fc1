"""``python -m fleet_server``: the ``rivalis-fleet`` daemon."""

import sys

from ._daemon import main

sys.exit(main())
