"""Small leaves every layer may use: checked names, the environment and data directories, private
files and scratch directories, process identity, interrupts, units, redaction, the bundled playbooks.
They import nothing of upgrader but ``errors`` and each other, and no third-party client."""
