"""`python -m tunnel` is `ptunnel`."""

from tunnel.cli import main

raise SystemExit(main())
