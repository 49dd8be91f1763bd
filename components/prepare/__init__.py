"""prepare: a labelled image source in; validated, split, sharded dataset out."""
