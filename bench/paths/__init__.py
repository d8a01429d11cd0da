"""Path adapters: each one forwards a local TCP port to the sink/echo server its own way."""
