"""One module per subcommand: each declares its options and calls the library."""
