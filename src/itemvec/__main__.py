"""``python -m itemvec`` runs the command line."""

from itemvec.cli.main import main

main()
