"""The ``fedheart`` command (:mod:`fedheart_cli.main`), outside the core.

It composes every side of the project: the core's tools (``fedheart``), the ServerApp's strategy
check (``server_app``), the app hash (``launcher``) and the web view (``webview``), so it lives beside
them and not in ``fedheart/``, whose core imports none of them (tests/unit/test_imports.py).
"""
