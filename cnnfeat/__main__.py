"""``python -m cnnfeat``: the same as the ``cnnfeat`` command."""

import sys

from cnnfeat.cli import main

sys.exit(main())
