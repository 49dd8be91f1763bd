"""export: SavedModel, TFLite and ONNX files, each verified against the Keras model."""
