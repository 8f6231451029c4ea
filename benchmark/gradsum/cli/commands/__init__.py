"""One module per `gradsum` subcommand; each defines `COMMAND`."""
