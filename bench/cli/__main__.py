"""`python -m bench.cli`: the same as the `gan-bench` command."""

import sys

from bench.cli import main

sys.exit(main())
