"""``python -m tmseeg.cli``: the ``tmseeg`` command."""
from tmseeg.cli.parser import main

raise SystemExit(main())
