"""`visionpipe explain`: where a trained model looks (Grad-CAM), per image."""
