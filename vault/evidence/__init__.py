"""Drills, drill report, status, metrics, evidence pack. May import jobs and everything below."""
