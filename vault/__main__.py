"""`python -m vault` runs the command line."""

from vault.cli.main import main_entry

main_entry()
