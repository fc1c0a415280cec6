"""``upgrader rollback``: back to a known-good snapshot by the least destructive path, then proved (see
``service``)."""
