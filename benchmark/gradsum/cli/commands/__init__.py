"""One module per `gradsum` subcommand; each defines `COMMAND` and imports the API it runs lazily."""
