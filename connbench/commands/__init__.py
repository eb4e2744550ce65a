"""One module per group of subcommands; each adds its parsers (add_parsers) and runs them."""
