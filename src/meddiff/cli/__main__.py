"""``python -m meddiff.cli``: the ``meddiff`` program."""
import sys

from meddiff.cli import main

sys.exit(main())
