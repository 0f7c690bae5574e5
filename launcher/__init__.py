"""Operating Flower for fedheart: start SuperLinks/SuperNodes, submit runs, check their real status.

The core (``fedheart``) knows nothing of Flower; this package drives Flower's own command-line
tools (``flower-superlink``, ``flower-supernode``, ``flwr``) for the simulation, the local
deployment and the tests.
"""
