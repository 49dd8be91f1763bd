"""`visionpipe predict`: classify image files with any exported format."""
