"""``fedheart view``: a local, read-only web view of the federation, its runs and their rounds.

It reads what the server side already holds (the run folders of fedheart/runs.py and Flower's
SuperLink state through its Control API) and serves it on loopback: no patient row ever reaches it.
Kept out of ``fedheart/`` (whose core knows nothing of Flower) and out of the app bundle.
"""
