"""`python -m connbench`: the same entry point as the `connbench` command."""

import sys

from connbench.cli import main

sys.exit(main())
