"""Kubeflow Pipelines side of visionpipe: thin components, the DAG, and the CLI."""
