"""``python -m learner ...``: the same as the ``impala-frodo`` command."""

import sys

from learner.app.cli import main

sys.exit(main(prog="python -m learner"))
