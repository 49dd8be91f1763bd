"""Stage logic of visionpipe: plain Python, no Kubeflow import."""

__version__ = "0.1.0"
