"""The unattended loop: scheduler, job runner, alerts. May import evidence and everything below."""
