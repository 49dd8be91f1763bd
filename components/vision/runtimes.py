"""Running each exported format: Keras, a TF SavedModel, LiteRT (TFLite), ONNX Runtime
and OpenVINO.

Every predictor takes float32 images and returns float32 probabilities, batch by
batch, so parity, latency and `visionpipe predict` treat all formats alike. Each also
says how many CPU threads its runtime computes with (`predictor.threads`, from the
runtime's own settings), which is what benchmark.json reports.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

# (float32 images (B, S, S, 3) in 0..255, metadata (B, M) or None) -> (B, K) probabilities;
# the metadata argument is for models trained with metadata columns and ignored otherwise
Predictor = Callable[..., np.ndarray]


def tensorflow_threads() -> int:
    """TensorFlow's intra-op threads: its setting, or (0, the default) one per CPU this
    process may be scheduled on, as TensorFlow counts them."""
    import os

    import tensorflow as tf

    return tf.config.threading.get_intra_op_parallelism_threads() or len(os.sched_getaffinity(0))


def keras_predictor(model) -> Predictor:
    from components.vision.metadata import model_inputs, takes_metadata

    two_inputs = takes_metadata(model)

    def predict(images: np.ndarray, metadata: np.ndarray | None = None) -> np.ndarray:
        # predict_on_batch runs Keras' compiled predict function: the fair Keras baseline
        inputs = model_inputs(images, metadata if two_inputs else None)
        return np.asarray(model.predict_on_batch(inputs), dtype=np.float32)

    predict.threads = tensorflow_threads()
    return predict


def missing_metadata(width: int | None = None) -> ValueError:
    size = f" of {width} values per image" if width else ""
    return ValueError(f"this model also takes a metadata input{size}; pass it")


def tflite_predictor(path: str, threads: int | None = None) -> Predictor:
    """A LiteRT interpreter that speaks float batches of any size.

    Integer models get their input quantized and output dequantized with the
    scale and zero point stored in the file, so every predictor speaks float.
    A file with a fixed batch (the exported [1, S, S, 3]) is run image by image;
    a dynamic one is resized to the batch. threads: XNNPACK's thread pool; without it
    LiteRT computes on the calling thread alone (measured: no worker thread is made).
    """
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=threads)
    interpreter.allocate_tensors()
    details = interpreter.get_input_details()
    # the image is the 4-D input; a model trained with metadata has a 2-D one too
    image_detail = next(d for d in details if len(d["shape"]) == 4)
    metadata_detail = next((d for d in details if len(d["shape"]) == 2), None)
    (output_detail,) = interpreter.get_output_details()
    out_scale, out_zero = output_detail["quantization"]
    fixed_batch = int(image_detail["shape_signature"][0])  # -1 when dynamic
    state = {"shapes": None}

    def feed(detail, values: np.ndarray) -> None:
        scale, zero = detail["quantization"]
        kind = detail["dtype"]
        if np.issubdtype(kind, np.integer) and scale:
            info = np.iinfo(kind)
            values = np.round(values / scale + zero).clip(info.min, info.max)
        interpreter.set_tensor(detail["index"], values.astype(kind))

    def run(images: np.ndarray, metadata: np.ndarray | None) -> np.ndarray:
        shapes = (images.shape, None if metadata_detail is None else metadata.shape)
        if fixed_batch < 0 and state["shapes"] != shapes:
            interpreter.resize_tensor_input(image_detail["index"], list(images.shape))
            if metadata_detail is not None:
                interpreter.resize_tensor_input(metadata_detail["index"], list(metadata.shape))
            interpreter.allocate_tensors()
            state["shapes"] = shapes
        feed(image_detail, images)
        if metadata_detail is not None:
            feed(metadata_detail, metadata)
        interpreter.invoke()
        output = np.array(interpreter.get_tensor(output_detail["index"]))
        if np.issubdtype(output.dtype, np.integer) and out_scale:
            return ((output.astype(np.float32) - out_zero) * out_scale).astype(np.float32)
        return output.astype(np.float32)

    def predict(images: np.ndarray, metadata: np.ndarray | None = None) -> np.ndarray:
        if metadata_detail is not None and metadata is None:
            raise missing_metadata(int(metadata_detail["shape"][-1]))
        if fixed_batch < 0 or len(images) == fixed_batch:
            return run(images, metadata)
        step = fixed_batch
        return np.concatenate(
            [
                run(images[i : i + step], None if metadata is None else metadata[i : i + step])
                for i in range(0, len(images), step)
            ]
        )

    predict.threads = int(threads) if threads else 1
    return predict


def saved_model_predictor(path: str) -> Predictor:
    """The SavedModel's `serving_default` signature, called as TF Serving would: named
    inputs `image` (and `metadata`), named output `probabilities`."""
    import tensorflow as tf

    serve = tf.saved_model.load(str(path)).signatures["serving_default"]
    two_inputs = "metadata" in serve.structured_input_signature[1]

    def predict(images: np.ndarray, metadata: np.ndarray | None = None) -> np.ndarray:
        feed = {"image": tf.constant(images, tf.float32)}
        if two_inputs:
            if metadata is None:
                raise missing_metadata()
            feed["metadata"] = tf.constant(metadata, tf.float32)
        return np.asarray(serve(**feed)["probabilities"], dtype=np.float32)

    predict.threads = tensorflow_threads()
    return predict


CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


def onnx_providers(available: list[str] | None = None) -> list[str]:
    """CUDA first where ONNX Runtime has it (onnxruntime-gpu on a GPU node), else the CPU."""
    if available is None:
        import onnxruntime as ort

        available = ort.get_available_providers()
    return [CUDA, CPU] if CUDA in available else [CPU]


def onnx_session(path: str, threads: int | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=onnx_providers())


def onnx_provider(session) -> str:
    """The provider a session actually runs on (CUDA may be listed and still fail to load)."""
    return session.get_providers()[0]


def onnx_threads(session) -> int | None:
    """The session's intra-op threads as set; None where it was left at 0, ONNX Runtime's
    own default (one per physical core, by its count): not known here."""
    configured = session.get_session_options().intra_op_num_threads
    return int(configured) if configured > 0 else None


def onnx_predictor(path: str, threads: int | None = None, session=None) -> Predictor:
    session = session or onnx_session(path, threads)
    inputs = session.get_inputs()
    image_name = next(i.name for i in inputs if len(i.shape) == 4)
    metadata_input = next((i for i in inputs if len(i.shape) == 2), None)

    def predict(images: np.ndarray, metadata: np.ndarray | None = None) -> np.ndarray:
        feed = {image_name: images.astype(np.float32)}
        if metadata_input is not None:
            if metadata is None:
                raise missing_metadata(int(metadata_input.shape[-1]))
            feed[metadata_input.name] = metadata.astype(np.float32)
        return np.asarray(session.run(None, feed)[0], dtype=np.float32)

    predict.threads = onnx_threads(session)
    return predict


def openvino_inference_precision(model) -> str | None:
    """The inference precision an IR was verified at: rt_info model_info/inference_precision
    (export writes "f32" into every IR); an older fp32 IR (model_info/precision "fp32")
    means f32 too; None for an IR that says nothing (OpenVINO's default then)."""
    for key, wanted in (("inference_precision", None), ("precision", "fp32")):
        if model.has_rt_info(["model_info", key]):
            value = str(model.get_rt_info(["model_info", key]).astype(str))
            if wanted is None:
                return value
            if value == wanted:
                return "f32"
    return None


def openvino_compiled(path: str, threads: int | None = None):
    """The IR compiled for the CPU with the latency hint (what a batch-1 service wants),
    at the inference precision written in the IR.

    On CPUs with bf16 units (AVX512_BF16, AMX) OpenVINO computes float layers in bfloat16
    by default (ov::hint::inference_precision), so a file verified at f32 would no longer
    be the function that was verified; INFERENCE_PRECISION_HINT keeps it. OpenVINO's CPU
    plugin does not read this from rt_info by itself (2026.4, measured), so every reader
    applies it: this function, and the OVMS service push writes (--plugin_config)."""
    import openvino as ov

    core = ov.Core()
    model = core.read_model(str(path))
    config = {"PERFORMANCE_HINT": "LATENCY"}
    precision = openvino_inference_precision(model)
    if precision:
        config["INFERENCE_PRECISION_HINT"] = precision
    if threads:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    return core.compile_model(model, "CPU", config)


def openvino_predictor(path: str, threads: int | None = None, compiled=None) -> Predictor:
    compiled = compiled or openvino_compiled(path, threads)
    inputs = compiled.inputs
    image = next(i for i in inputs if len(i.get_partial_shape()) == 4)
    metadata_input = next((i for i in inputs if len(i.get_partial_shape()) == 2), None)
    request = compiled.create_infer_request()

    def predict(images: np.ndarray, metadata: np.ndarray | None = None) -> np.ndarray:
        feed = {image.get_any_name(): images.astype(np.float32)}
        if metadata_input is not None:
            if metadata is None:
                raise missing_metadata(int(metadata_input.get_partial_shape()[-1].get_length()))
            feed[metadata_input.get_any_name()] = metadata.astype(np.float32)
        result = request.infer(feed)
        return np.asarray(result[compiled.outputs[0]], dtype=np.float32).copy()

    predict.threads = int(compiled.get_property("INFERENCE_NUM_THREADS"))
    predict.inference_precision = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
    return predict


def predict_all(
    predictor: Predictor, images: np.ndarray, batch_size: int, rows: np.ndarray | None = None
) -> np.ndarray:
    """Probabilities for a whole uint8 image array or a streamed split (records.SplitImages)
    and its metadata rows, one batch in memory at a time."""
    from components.vision.records import image_batches

    outputs, start = [], 0
    for batch in image_batches(images, batch_size):
        part = None if rows is None else rows[start : start + len(batch)]
        outputs.append(predictor(batch.astype(np.float32), part))
        start += len(batch)
    return np.concatenate(outputs) if outputs else np.zeros((0, 0), np.float32)
