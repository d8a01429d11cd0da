"""`python -m tunnel` is `ptunnel`."""

from tunnel.cli.main import main

raise SystemExit(main())
