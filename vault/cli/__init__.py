"""Command line: parsing, output, prompts, exit codes. May import every wing; none imports it."""
