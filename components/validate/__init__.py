"""The validate stage: the prepared dataset checked against the deployed version."""
