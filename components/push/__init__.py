"""The push stage: publish a blessed, verified export to a model registry."""
