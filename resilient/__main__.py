"""`python -m resilient`: the same as the `resilient` command."""

from .cli import main

raise SystemExit(main())
