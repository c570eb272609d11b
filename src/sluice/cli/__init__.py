"""The `sluice` command line: a thin layer over `sluice.api`, one module per verb group."""
