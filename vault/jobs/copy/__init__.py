"""Copying snapshots into another repository: a replica, packs as stored (`replica`), with
what it takes from its source first (`sync`: key rotations, erases, tags); or an independent
repository, blob by blob, re-encrypted (`independent`)."""
