"""``python -m launcher.hospital``: see launcher/hospital/__init__.py."""

import sys

from launcher.hospital.cli import main

sys.exit(main())
