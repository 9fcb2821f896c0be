"""`python -m gateway` runs the seabridge command line."""

import sys

from gateway.cli import main

sys.exit(main())
