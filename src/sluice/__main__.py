"""`python -m sluice` is the CLI: batch scripts use it with sys.executable so no PATH lookup is needed."""

from sluice.cli.main import main

main()
