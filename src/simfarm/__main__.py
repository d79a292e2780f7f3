"""``python -m simfarm`` is the ``simfarm`` command."""

import sys

from simfarm.cli import main

sys.exit(main())
