"""The embedded demo: a local PostgreSQL server started by the code, seeded with a deterministic
dataset, and the demo CRM table and event files. The deployment switch
(``customer_assets/deployments.py``) picks it when no DB_HOST is set; the production code never
imports it."""
