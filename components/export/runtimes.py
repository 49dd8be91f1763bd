"""Running each exported format: Keras, LiteRT (TFLite) and ONNX Runtime, batch by batch."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Predictor = Callable[[np.ndarray], np.ndarray]  # float32 (B, S, S, 3) 0..255 -> (B, K) probs


def keras_predictor(model) -> Predictor:
    def predict(images: np.ndarray) -> np.ndarray:
        # predict_on_batch runs Keras' compiled predict function: the fair Keras baseline
        return np.asarray(model.predict_on_batch(images), dtype=np.float32)

    return predict


def tflite_predictor(path: str, threads: int | None = None) -> Predictor:
    """A LiteRT interpreter that resizes its batch dimension as needed.

    Integer models get their input quantized and output dequantized with the
    scale and zero point stored in the file, so every predictor speaks float.
    """
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=threads)
    interpreter.allocate_tensors()
    (input_detail,) = interpreter.get_input_details()
    (output_detail,) = interpreter.get_output_details()
    in_scale, in_zero = input_detail["quantization"]
    out_scale, out_zero = output_detail["quantization"]
    in_type = input_detail["dtype"]
    state = {"shape": None}

    def predict(images: np.ndarray) -> np.ndarray:
        if state["shape"] != images.shape:
            interpreter.resize_tensor_input(input_detail["index"], list(images.shape))
            interpreter.allocate_tensors()
            state["shape"] = images.shape
        if np.issubdtype(in_type, np.integer) and in_scale:
            info = np.iinfo(in_type)
            quantized = np.round(images / in_scale + in_zero).clip(info.min, info.max)
            images = quantized.astype(in_type)
        interpreter.set_tensor(input_detail["index"], images.astype(in_type))
        interpreter.invoke()
        output = np.array(interpreter.get_tensor(output_detail["index"]))
        if np.issubdtype(output.dtype, np.integer) and out_scale:
            return ((output.astype(np.float32) - out_zero) * out_scale).astype(np.float32)
        return output.astype(np.float32)

    return predict


def onnx_predictor(path: str, threads: int | None = None) -> Predictor:
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def predict(images: np.ndarray) -> np.ndarray:
        return np.asarray(session.run(None, {name: images.astype(np.float32)})[0], dtype=np.float32)

    return predict


def predict_all(predictor: Predictor, images: np.ndarray, batch_size: int) -> np.ndarray:
    """Probabilities for a whole uint8 image array, in batches."""
    outputs = [
        predictor(images[i : i + batch_size].astype(np.float32))
        for i in range(0, len(images), batch_size)
    ]
    return np.concatenate(outputs) if outputs else np.zeros((0, 0), np.float32)
