"""Pieces every stage shares: errors, typed configs, images, artifacts, progress."""
