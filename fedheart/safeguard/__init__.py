"""What a hospital decides and records for itself, whatever the server asks (plain Python, no Flower).

- :mod:`fedheart.safeguard.policy`: the hospital's policy file and the check of every request.
- :mod:`fedheart.safeguard.budget`: the lifetime privacy ledger on the hospital's own storage.
- :mod:`fedheart.safeguard.audit`: the tamper-evident audit trail (a SHA-256 hash chain).
- :mod:`fedheart.safeguard.files`: the atomic writes and the lock both use.
- :mod:`fedheart.safeguard.scrub`: error text that names problems without any value from the data.

The ClientApp (``client_app/gate.py``) applies them to every message; the server can change none of them.
"""
