"""mngr: hosts through named provider instances."""

__version__ = "0.1.0"
