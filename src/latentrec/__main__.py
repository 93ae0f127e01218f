"""`python -m latentrec ...` runs the command line (torchrun uses this form)."""

from latentrec.cli import run

run()
