"""ptunnel's benchmark suite (issue 7): ptunnel against the tunnels users would pick instead.

Run it with `make bench` or `python -m bench [--quick] [--only PATH,...] [--natlab]`.
"""
