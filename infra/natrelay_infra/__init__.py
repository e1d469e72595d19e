"""Local stack and deploy helpers for natrelay (tables from template.yaml, moto server)."""
