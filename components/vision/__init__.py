"""The vision pieces every stage shares: image decoding, augmentation and AutoAugment,
the project's Keras layers, model loading, Grad-CAM, metadata encoding, TFRecords,
k-fold splits, and running every exported format."""
