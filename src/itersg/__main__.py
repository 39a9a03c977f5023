"""``python -m itersg`` runs the command line."""

import sys

from itersg.cli import main

sys.exit(main())
