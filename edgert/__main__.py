"""`python -m edgert` is the same as the `edgert` console script."""

import sys

from edgert.cli import main

sys.exit(main())
