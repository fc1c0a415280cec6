"""The step engine under ``apply`` and ``rollback``: runs a journaled list of plan steps through small
ports (``ports``), writing each step to the journal before and after it acts, gating after each, and
resuming from the real state of the cluster after any interruption."""
