"""The restore job: the restorer, and the target directory it writes only through dir fds."""
