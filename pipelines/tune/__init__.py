"""tune: a search over the train stage's settings (KerasTuner here, Katib on a cluster)."""
