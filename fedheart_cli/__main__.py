"""``python -m fedheart_cli ...``: the same as the ``fedheart`` command."""

import sys

from fedheart_cli.main import main

sys.exit(main())
