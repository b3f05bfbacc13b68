"""Everything that runs inside the training subprocess."""

# The estimators of the Fisher trace (critui.train.fisher), here rather than there so that
# the metrics.fisher plugin can offer them without importing torch.
FISHER_ESTIMATORS = ("exact", "batch")
