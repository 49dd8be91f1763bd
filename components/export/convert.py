"""Turning the Keras model into SavedModel, TFLite and ONNX files.

The SavedModel and ONNX graphs are the serving model: float32 RGB images in
0..255 of any size, (B, H, W, 3), named `image`; float32 class probabilities
out, (B, K), named `probabilities`. The TFLite files take one image of the
training size, [1, S, S, 3] (uint8 for the full-integer one), and their
standard metadata tells mobile runtimes to resize to it.
Resizing to the training size S (bilinear, SavedModel and ONNX) and
normalisation (all) live inside the graph; augmentation never does (it runs in
tf.data). An S x S input passes the resize unchanged, so images resized as in preparation (what `visionpipe predict`
feeds) give exactly the Keras model's outputs. A model trained with metadata
columns has a second input, `metadata`: float32 (B, M), the vector that
`metadata.json` (written beside every format, and packed into the .tflite and
.onnx files) encodes.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from components.infra.errors import UserError, VerificationFailed


class ExportFailed(VerificationFailed):
    """A format could not be produced or does not match the Keras model."""


def metadata_size(model) -> int:
    """M of the model's (B, M) metadata input; 0 for an image-only model."""
    return int(model.inputs[1].shape[-1]) if len(model.inputs) > 1 else 0


def input_specs(model) -> list:
    """The serving signature: `image`, and `metadata` for a two-input model."""
    import tensorflow as tf

    specs = [tf.TensorSpec([None, None, None, 3], tf.float32, name="image")]
    if metadata_size(model):
        specs.append(tf.TensorSpec([None, metadata_size(model)], tf.float32, name="metadata"))
    return specs


def serving_model(model, image_size: int):
    """`model` behind a bilinear resize to its input size: takes images of any size."""
    import keras

    image = keras.Input((None, None, 3), name="image")
    resized = keras.layers.Resizing(
        image_size, image_size, interpolation="bilinear", name="resize_to_model"
    )(image)
    if not metadata_size(model):
        return keras.Model(image, model(resized), name="serving")
    rows = keras.Input((metadata_size(model),), name="metadata")
    return keras.Model([image, rows], model([resized, rows]), name="serving")


def endpoint(served):
    """The serving call with named arguments (they name the signature's inputs)."""
    if len(served.inputs) > 1:

        def serve_both(image, metadata):
            return {"probabilities": served([image, metadata], training=False)}

        return serve_both

    def serve(image):
        return {"probabilities": served(image, training=False)}

    return serve


def serving_function(model, image_size: int):
    """A tf.function over `input_specs(model)` returning {"probabilities": (B, K)}."""
    import tensorflow as tf

    served = serving_model(model, image_size)
    return tf.function(endpoint(served), input_signature=input_specs(model))


def write_saved_model(model, image_size: int, path: Path) -> None:
    """A TF SavedModel whose `serving_default` signature is the serving model."""
    import keras

    served = serving_model(model, image_size)
    archive = keras.export.ExportArchive()
    archive.track(served)
    archive.add_endpoint(name="serve", fn=endpoint(served), input_signature=input_specs(model))
    archive.write_out(str(path), verbose=False)


TFLITE_VARIANTS = {  # format name -> (file, quantization)
    "tflite": ("model.tflite", "float32"),
    "tflite_fp16": ("model_fp16.tflite", "float16"),
    "tflite_dynamic": ("model_dynamic_int8.tflite", "dynamic"),
    "tflite_int8": ("model_int8.tflite", "int8"),
}
# Quantized formats are judged by the accuracy they lose, not by agreement: rounding
# weights to float16 or int8 may flip a near-tie (seen: 1 of 270 for float16 on an
# 8-epoch model), which is not a conversion error. Their agreement is still reported.
QUANTIZED_FORMATS = ("tflite_fp16", "tflite_dynamic", "tflite_int8", "onnx_int8", "openvino_int8")


def tflite_specs(model, image_size: int) -> list:
    """The TFLite inputs: one RGB image of the training size, [1, S, S, 3] (and its [1, M]
    metadata row). Mobile runtimes (MediaPipe, the Task Library, Android Studio) want a
    fixed shape and do the resize themselves, as the metadata tells them."""
    import tensorflow as tf

    specs = [tf.TensorSpec([1, image_size, image_size, 3], tf.float32, name="image")]
    if metadata_size(model):
        specs.append(tf.TensorSpec([1, metadata_size(model)], tf.float32, name="metadata"))
    return specs


def pinned_pixel_range(representative):
    """`representative` with a first batch that holds a 0 and a 255 pixel, so full-integer
    calibration gives the uint8 input scale 1 and zero point 0: the input is then exactly
    the image's pixel values, which is what MediaPipe and the Task Library feed."""
    import numpy as np

    def batches():
        first = True
        for batch in representative():
            if first:
                image = batch["image"] if isinstance(batch, dict) else batch
                pinned = np.array(image, dtype=np.float32, copy=True)
                pinned[:, 0, 0, :], pinned[:, 0, 1, :] = 0.0, 255.0
                yield {**batch, "image": pinned} if isinstance(batch, dict) else pinned
                first = False
            yield batch

    return batches


def write_tflite(
    model, image_size: int, path: Path, quantization: str = "float32", representative=None
) -> None:
    """TFLite with builtin ops only, input [1, S, S, 3]; a graph that needs Flex ops is
    refused by name.

    quantization: float32 | float16 (weights) | dynamic (int8 weights, float
    activations) | int8 (full integer, uint8 input and output; needs
    `representative`, an iterable of float32 batches from the train split).
    """
    import tempfile

    import keras
    import tensorflow as tf

    # through a fixed-shape SavedModel: converting a concrete function of a Keras 3 model
    # leaves its variables as READ_VARIABLE ops that integer calibration cannot run
    scratch = tempfile.TemporaryDirectory(prefix="tflite-")
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        name="serve", fn=endpoint(model), input_signature=tflite_specs(model, image_size)
    )
    archive.write_out(scratch.name, verbose=False)
    converter = tf.lite.TFLiteConverter.from_saved_model(scratch.name)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantization == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif quantization == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif quantization == "int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        # batches of the image, or {"image", "metadata"} for a two-input model
        batches = pinned_pixel_range(representative)
        converter.representative_dataset = lambda: (
            batch if isinstance(batch, dict) else [batch] for batch in batches()
        )
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8
        converter.inference_output_type = tf.uint8
    try:
        flatbuffer = converter.convert()
    except Exception as error:  # the converter raises ConverterError with the op list inside
        message = str(error)
        if "Flex" in message or "TF Select" in message or "not supported" in message:
            ops = sorted(set(re.findall(r"\btf\.([A-Z][A-Za-z0-9_]+)", message)))
            raise ExportFailed(
                f"TFLite ({quantization}) export needs ops outside the TFLite builtin set"
                + (f": {', '.join(ops)}" if ops else "")
                + "; replace the layers that use them (Flex ops are not in the mobile runtime)"
            ) from None
        raise
    finally:
        scratch.cleanup()
    path.write_bytes(flatbuffer)


def inference_model(model):
    """The model to export: float32 everywhere, with any augmentation layers removed.

    A model trained under a mixed-precision policy keeps float32 variables, so
    its weights carry over unchanged into a float32 clone. Random* / augmentation
    layers act only in training; they are replaced by Identity so no random op
    can reach an exported graph.
    """
    import keras

    from components.vision.augment import is_augmentation

    def policy_name(layer) -> str:
        return getattr(getattr(layer, "dtype_policy", None), "name", "float32")

    has_augmentation = any(is_augmentation(layer) for layer in _all_layers(model))
    mixed = any(policy_name(layer) != "float32" for layer in _all_layers(model))
    if not has_augmentation and not mixed:
        return model

    def clone(layer):
        if is_augmentation(layer):
            return keras.layers.Identity(name=layer.name)
        config = layer.get_config()
        if "dtype" in config:
            config["dtype"] = "float32"
        if isinstance(layer, keras.Sequential) or isinstance(layer, keras.Model):
            return keras.models.clone_model(layer, clone_function=clone)
        return layer.__class__.from_config(config)

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float32")
    try:
        rebuilt = keras.models.clone_model(model, clone_function=clone)
    finally:
        keras.config.set_dtype_policy(previous)
    # Identity layers have no weights, so the remaining weights line up one to one
    rebuilt.set_weights(model.get_weights())
    return rebuilt


def _all_layers(model):
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from _all_layers(layer)


def write_onnx(
    model,
    image_size: int,
    path: Path,
    opset: int,
    classes: list[str],
    encoder: dict | None = None,
) -> None:
    """ONNX through tf2onnx with a dynamic batch dimension; class names in the metadata."""
    import onnx
    import tf2onnx

    serve = serving_function(model, image_size)
    try:
        proto, _ = tf2onnx.convert.from_function(
            serve, input_signature=input_specs(model), opset=opset
        )
    except ValueError as error:
        raise UserError(f"export.onnx_opset={opset} cannot express this model: {error}") from None
    freeze_captured_constants(proto, serve.get_concrete_function(*input_specs(model)))
    proto = without_layout_transposes(proto)
    entry = proto.metadata_props.add()
    entry.key, entry.value = "labels", json.dumps(classes)
    entry = proto.metadata_props.add()
    entry.key, entry.value = (
        "input",
        (
            f"image: float32 (batch, H, W, 3) RGB in 0..255, resized inside to {image_size}x{image_size}"
        ),
    )
    entry = proto.metadata_props.add()
    entry.key, entry.value = "image_size", str(image_size)
    if encoder is not None:
        entry = proto.metadata_props.add()
        entry.key, entry.value = (
            "metadata_input",
            f"metadata: float32 (batch, {len(encoder['features'])}) encoded as metadata.json says",
        )
        entry = proto.metadata_props.add()
        entry.key, entry.value = "metadata_encoder", json.dumps(encoder)
    onnx.save(proto, str(path))
    check_onnx(path)


ELEMENTWISE = ("Add", "Sub", "Mul", "Div")


def without_layout_transposes(proto):
    """The graph with tf2onnx's transpose optimizer run to the end.

    Keras builds NHWC graphs and ONNX convolutions are NCHW, so tf2onnx wraps every
    Conv in a Transpose pair and relies on its optimizer to cancel them. The optimizer
    gives up on the whole graph at the first Add of a Conv output and a 0-d constant
    (MobileNetV3's hard-swish, `x + 3`: `max()` of the constant's empty shape in
    `TransposeOptimizer._add_handler`), leaving 104 Transposes around 52 Convs. A 0-d
    operand of an elementwise op broadcasts exactly as the same value of shape [1]
    does (against any tensor of rank >= 1), so such constants get shape [1] and the
    optimizers run again; what is left is the input's NHWC->NCHW (counted in
    parity.json as `transpose_nodes`)."""
    import collections

    from onnx import numpy_helper
    from tf2onnx.graph import GraphUtil

    consumers = collections.defaultdict(set)
    for node in proto.graph.node:
        for name in node.input:
            consumers[name].add(node.op_type)

    def vector(tensor) -> bool:
        if len(tensor.dims) or not consumers[tensor.name] <= set(ELEMENTWISE):
            return False
        tensor.CopyFrom(
            numpy_helper.from_array(numpy_helper.to_array(tensor).reshape(1), tensor.name)
        )
        return True

    changed = sum(vector(t) for t in proto.graph.initializer)
    for node in proto.graph.node:
        if node.op_type == "Constant" and consumers[node.output[0]] <= set(ELEMENTWISE):
            for attribute in node.attribute:
                if attribute.name == "value" and not len(attribute.t.dims):
                    name = attribute.t.name
                    value = numpy_helper.to_array(attribute.t).reshape(1)
                    attribute.t.CopyFrom(numpy_helper.from_array(value, name))
                    changed += 1
    if not changed and not transpose_count(proto) > 2:
        return proto
    return GraphUtil.optimize_model_proto(proto, catch_errors=False)


def transpose_count(proto) -> int:
    """Transpose nodes in an ONNX graph (NHWC<->NCHW layout changes, for a Keras model)."""
    return sum(node.op_type == "Transpose" for node in proto.graph.node)


def freeze_captured_constants(proto, concrete) -> None:
    """Tensors the traced function captured by value (a Normalization layer's mean and
    variance in EfficientNet or DenseNet preprocessing) reach tf2onnx as extra graph inputs
    that no caller can feed; make each an initializer holding its value."""
    from onnx import numpy_helper

    values = {
        inner.name: outer.numpy()
        for outer, inner in concrete.graph.captures
        if outer.dtype.name != "resource" and hasattr(outer, "numpy")
    }
    graph = proto.graph
    frozen = [i for i in graph.input if i.name in values]
    for graph_input in frozen:
        graph.initializer.append(
            numpy_helper.from_array(values[graph_input.name], graph_input.name)
        )
        graph.input.remove(graph_input)


def check_onnx(path: Path) -> None:
    """The file as a consumer would check it: onnx's checker with shape inference."""
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as error:
        raise ExportFailed(
            f"{path.name} fails onnx.checker.check_model(full_check=True): "
            + " ".join(str(error).split())[:300]
        ) from None


def write_onnx_int8(fp32: Path, path: Path, representative) -> None:
    """Static int8 ONNX in QDQ form with ONNX Runtime's own quantization tooling.

    Weights per channel (int8), activations uint8, ranges calibrated (min/max) on train
    images, `representative` as for TFLite. QDQ keeps the graph readable by any runtime
    and lets ONNX Runtime fuse int8 kernels on x86 (VNNI/AVX2) and ARM.
    """
    import tempfile

    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_static,
    )

    graph = onnx.load(str(fp32), load_external_data=False).graph
    constants = {i.name for i in graph.initializer}  # some graphs list constants as inputs too
    # the 4-D input is the image, a 2-D one the metadata (whatever tf2onnx named them)
    names = {
        ("image" if len(i.type.tensor_type.shape.dim) == 4 else "metadata"): i.name
        for i in graph.input
        if i.name not in constants
    }

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(representative())

        def get_next(self):
            batch = next(self.batches, None)
            if batch is None:
                return None
            batch = batch if isinstance(batch, dict) else {"image": batch}
            return {names[key]: value for key, value in batch.items()}

    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        try:  # shape inference and graph clean-up, as ONNX Runtime recommends before quantizing
            quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
        except Exception:  # an unusual graph: quantize the exported one as it is
            prepared = fp32
        quantize_static(
            str(prepared),
            str(path),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )
    # the metadata (labels, image size, encoder) travels with the quantized file too
    source, target = onnx.load(str(fp32)), onnx.load(str(path))
    del target.metadata_props[:]
    target.metadata_props.extend(source.metadata_props)
    onnx.save(target, str(path))
    check_onnx(path)


INFERENCE_PRECISION = "f32"  # ov::hint::inference_precision of every IR written here


def openvino_info(model, classes: list[str], image_size: int, precision: str) -> None:
    """The labels and the input contract in the IR itself (rt_info), as OpenVINO Model
    Server and `visionpipe predict` read them."""
    model.set_rt_info(json.dumps(classes), ["model_info", "labels"])
    model.set_rt_info(
        f"float32 (batch, H, W, 3) RGB in 0..255, resized inside to {image_size}x{image_size}",
        ["model_info", "input"],
    )
    model.set_rt_info("none: the graph normalises its own input", ["model_info", "normalization"])
    model.set_rt_info(str(image_size), ["model_info", "image_size"])
    model.set_rt_info(precision, ["model_info", "precision"])
    # the precision export verifies every IR at, and every reader must run it at: OpenVINO
    # computes float layers in bf16 by default on AVX512_BF16/AMX CPUs (runtimes.py)
    model.set_rt_info(INFERENCE_PRECISION, ["model_info", "inference_precision"])
    model.set_rt_info("visionpipe", ["model_info", "producer"])


def write_openvino(onnx_path: Path, path: Path, classes: list[str], image_size: int) -> None:
    """OpenVINO IR (model.xml + model.bin) from the verified ONNX file, weights in fp32."""
    import openvino as ov

    model = ov.convert_model(str(onnx_path))
    openvino_info(model, classes, image_size, "fp32")
    ov.save_model(model, str(path), compress_to_fp16=False)


def write_openvino_int8_qdq(onnx_int8: Path, path: Path, classes, image_size: int) -> None:
    """int8 IR from the QDQ ONNX file (the same calibration as model_int8.onnx):
    OpenVINO folds each QuantizeLinear/DequantizeLinear pair into its int8 kernels."""
    import openvino as ov

    model = ov.convert_model(str(onnx_int8))
    openvino_info(model, classes, image_size, "int8 (from the QDQ ONNX)")
    ov.save_model(model, str(path), compress_to_fp16=False)


def write_openvino_int8_nncf(fp32_xml: Path, path: Path, representative, classes, size) -> None:
    """int8 IR by NNCF post-training quantization of the fp32 IR, calibrated on the same
    train images as the other int8 files (`representative`, as for TFLite)."""
    import nncf
    import openvino as ov

    model = ov.Core().read_model(str(fp32_xml))
    names = {
        ("image" if len(i.get_partial_shape()) == 4 else "metadata"): i.get_any_name()
        for i in model.inputs
    }
    batches = list(representative())

    def feed(batch):
        batch = batch if isinstance(batch, dict) else {"image": batch}
        return {names[key]: value for key, value in batch.items()}

    quantized = nncf.quantize(
        model,
        nncf.Dataset(batches, feed),
        subset_size=len(batches),
        preset=nncf.QuantizationPreset.MIXED,
    )
    openvino_info(quantized, classes, size, "int8 (NNCF post-training quantization)")
    ov.save_model(quantized, str(path), compress_to_fp16=False)
