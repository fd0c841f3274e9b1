"""One module per job (backup, restore, check, …). Jobs never import each other; repo and below."""
