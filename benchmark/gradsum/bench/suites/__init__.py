"""One module per benchmark suite; each defines `SUITE`."""
