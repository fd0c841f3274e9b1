"""The check job: snapshots, trees, packs (checker) and every other object (records)."""
