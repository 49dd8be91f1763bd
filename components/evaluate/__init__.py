"""evaluate: test-split metrics, error analysis, report and the blessing gate."""
