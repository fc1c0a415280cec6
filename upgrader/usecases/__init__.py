"""The use cases, the only layer that drives the engine: planning (``plans``), ``apply``,
``rollback``, ``verification``, and what every run kind shares (``runs``: start, resume, abandon,
drive, one stop path). The CLI calls these; nothing below imports them."""
