"""``python -m itemvec`` runs the command line."""

from itemvec.cli import main

main()
