"""train: a prepared dataset in; the best Keras model, its history and val metrics out."""
