"""ptunnel rendezvous server: introduces nodes of one network and relays when punching fails."""
