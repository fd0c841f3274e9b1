"""The web console (`vault serve`): server-rendered pages over the jobs and evidence, for the
practice's staff and its IT provider. An optional extra (`vault-backup[console]`): nothing
below this wing imports it, and a headless backup host never installs its web stack."""
