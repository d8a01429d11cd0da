"""ptunnel node: reach a machine behind a NAT through a punched, encrypted UDP path."""

__version__ = "0.1.0"
