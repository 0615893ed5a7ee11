"""``python -m itemvec.cli`` runs the command line."""

from itemvec.cli.main import main

main()
