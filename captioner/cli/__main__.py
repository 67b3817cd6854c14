"""``python -m captioner.cli``, as the tests and benchmarks start the command."""

import sys

from . import main

sys.exit(main())
