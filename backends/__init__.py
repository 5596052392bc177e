"""Built-in backends, installed as `mngr_backends`: one module per backend, registered in
pyproject.toml under the `mngr.backends` entry-point group."""
