"""Everything the managing process does: the run index, launching workers, reading events."""
