"""``python -m ltau_md.cli``: the ``ltau-md`` command."""

import sys

from ltau_md.cli import main

sys.exit(main())
