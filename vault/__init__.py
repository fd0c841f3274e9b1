"""vault: encrypted, deduplicating backups and restore drills for dental imaging archives."""

__version__ = "0.1.0"
