"""Package data: templates that ``msuite init`` and ``msuite generate`` render."""
