"""The launcher: allocation discovery, placement, MPI command lines and node agents (DB-free)."""
