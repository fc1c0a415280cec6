"""The pure core: versions, the rules catalog and its checks, the planner, and the config schema.
No I/O beyond reading a given file, no third-party client; everything above builds on it."""
