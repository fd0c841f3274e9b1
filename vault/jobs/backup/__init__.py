"""The backup job: walk source paths, save new content, write a snapshot.

Pipeline: the walking thread reads each file in 2 MiB blocks, hashes it (SHA-256 of the whole
file) and cuts chunks; a pool of workers computes chunk ids, compresses and seals new chunks
into packs; upload threads write full packs. Everything that releases the GIL (hashing, zstd,
AES-GCM, file and network I/O) overlaps. At most IN_FLIGHT_PER_WORKER chunks per worker are in
flight, so memory does not grow with file size; file nodes get their chunk ids when their
directory's tree is written, so the walk never waits for one file's chunks.

`stop` (set by the command line on SIGTERM) ends a backup early but cleanly: no new chunk is
started, the packs being filled are uploaded and indexed, so the next run deduplicates against
everything already sent; no snapshot is written and the lock is released.

A file whose size, mtime, ctime and inode match the parent is not read again (its chunk list is
reused), nor is an unchanged directory's tree rewritten. Unreadable files are reported and left
out; a file that changes while being read is saved, flagged, and re-read next time.
"""

from vault.jobs.backup.options import BackupOptions, BackupResult, Problem
from vault.jobs.backup.run import backup, find_parent

__all__ = ["BackupOptions", "BackupResult", "Problem", "backup", "find_parent"]
