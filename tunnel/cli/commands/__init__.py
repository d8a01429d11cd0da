"""One module per `ptunnel` subcommand; `tunnel.cli.main` says what each provides."""
