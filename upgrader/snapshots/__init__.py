"""Snapshots good enough to bet a rollback on, kept in up to three tiers.

``local`` takes a snapshot into the controller's directory and checks it; ``peer`` keeps copies on
every control-plane node; ``remote`` keeps sealed copies in an S3-compatible bucket; ``tiers`` ties
them together (create, verify, pull, prune, import, and what a rollback needs). Import the module
you need: this package imports none of them, so the object-store path stays light.
"""
