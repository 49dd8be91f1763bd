"""The infrastructure every stage shares: typed configs and errors, storage and object
stores, artifacts, the model registry, tracking, reports, progress, the CLI helpers.
No Keras, no image code: that is `components.vision`."""
