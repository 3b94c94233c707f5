"""One module per `graphfix` subcommand (see graphfix/cli.py)."""
