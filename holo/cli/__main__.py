"""``python -m holo.cli``: the ``holo`` command."""

import sys

from holo.cli.main import main

sys.exit(main())
