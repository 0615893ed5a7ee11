"""The ``itemvec`` command line: one module per group of commands."""
