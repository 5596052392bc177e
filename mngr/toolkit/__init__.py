"""The backend toolkit: what every backend module builds on, written once.

- `argv`: one argv builder (skips None, repeats lists, `--k v` or `--k=v`);
- `vendor_json`: lenient vendor models and parsing that names the command in its error;
- `rules`: stderr classification as a table of rules;
- `ssh`: one ssh argv builder (batch mode, known hosts, identity, connection reuse);
- `http`: JSON over HTTP, for a backend that talks to an API (the `mngr` backend).

Backends import from here; core never imports a backend.
"""
