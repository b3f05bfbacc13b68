"""Everything that runs inside the training subprocess."""
