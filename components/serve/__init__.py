"""`visionpipe serve`: the verified server file over HTTP (KServe's model server)."""
