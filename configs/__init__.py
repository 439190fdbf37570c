"""Built-in de-identification profiles (``profiles/``) and cluster definitions (``cluster/``).

Installed as the data package ``anonpipe_configs`` (pyproject.toml maps it to this folder), so
a wheel install finds them as a checkout does: ``tasks.builtin.config_dir``.
"""
