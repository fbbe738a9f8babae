"""``python -m otel_alloc`` is ``otel-alloc``."""

import sys

from otel_alloc.cli import main

sys.exit(main())
