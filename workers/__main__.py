"""`python -m workers` is the `pagemill` command."""

from workers.cli import main

main()
