"""`python -m pbxtui`: the same as the `pbxtui` console script."""

from pbxtui.cli import main

raise SystemExit(main())
