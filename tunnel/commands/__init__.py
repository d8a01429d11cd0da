"""One module per `ptunnel` subcommand; see `tunnel.cli` for the interface each one provides."""
