"""`python -m visionline_edge`: the same as the `visionline-edge` command."""

from visionline_edge.cli import main

raise SystemExit(main())
