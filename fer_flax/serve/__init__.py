"""Models at work: the predictor for photos, videos and cameras, face detection, the
package's own model format and the exported ones (SavedModel, TFLite, ONNX). Imports train (for
checkpoints), models, data and core."""
