"""AutoAugment's ImageNet policy: every operation against PIL (the reference the policy
was found with), every sub-policy's two steps with their probabilities and magnitudes
under fixed draws, and the preset in a real tf.data pipeline."""

import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageOps

from components.vision import autoaugment as aa


@pytest.fixture(scope="module")
def image():
    """A real digit with colour gradients added, so colour operations have work to do."""
    from sklearn.datasets import load_digits

    digit = load_digits().images[3]
    grey = np.array(Image.fromarray((digit * 16).clip(0, 255).astype(np.uint8)).resize((32, 32)))
    img = np.repeat(grey[..., None], 3, axis=-1).astype(int)
    ramp = np.linspace(0, 120, 32).astype(int)
    img[..., 0] += ramp[None, :]
    img[..., 2] += ramp[:, None]
    return img.clip(0, 255).astype(np.uint8)


def reference(img: np.ndarray, name: str, amount: float) -> np.ndarray:
    pil = Image.fromarray(img)
    if name == "ShearX":
        out = pil.transform(pil.size, Image.AFFINE, (1, amount, 0, 0, 1, 0), Image.NEAREST)
    elif name == "Rotate":
        out = pil.rotate(amount, Image.NEAREST)
    elif name in ("Color", "Contrast", "Sharpness"):
        out = getattr(ImageEnhance, name)(pil).enhance(1 + amount)
    elif name == "Posterize":
        out = ImageOps.posterize(pil, int(amount))
    elif name == "Solarize":
        out = ImageOps.solarize(pil, amount)
    else:
        out = {"AutoContrast": ImageOps.autocontrast, "Equalize": ImageOps.equalize}.get(
            name, ImageOps.invert
        )(pil)
    return np.asarray(out)


def ours(img: np.ndarray, name: str, amount: float) -> np.ndarray:
    import keras

    x = keras.ops.convert_to_tensor(img[None].astype(np.float32))
    out = aa.FUNCTIONS[name](x, keras.ops.convert_to_tensor([amount], "float32"))
    return np.asarray(keras.ops.round(out))[0]


def close(a, b, mean=0.5, far=0.01):
    difference = np.abs(a.astype(float) - b.astype(float))
    return difference.mean() <= mean and (difference > 2).mean() <= far


@pytest.mark.parametrize("name", aa.OPERATIONS)
def test_each_operation_matches_pil(image, name):
    amounts = {
        "ShearX": (0.167, -0.3),
        "Rotate": (26.7, -10.0),
        "Posterize": (4.0, 6.0),
        "Solarize": (113.3, 28.3),
    }.get(name, (0.8, -0.5) if name in aa.SIGNED else (0.0,))
    for amount in amounts:
        assert close(ours(image, name, amount), reference(image, name, amount)), (name, amount)


def test_the_policy_is_the_papers_imagenet_policy():
    assert len(aa.IMAGENET_POLICY) == 25 and all(len(row) == 2 for row in aa.IMAGENET_POLICY)
    used = {op for row in aa.IMAGENET_POLICY for op, _, _ in row}
    assert used == set(aa.OPERATIONS)
    assert aa.magnitude("Rotate", 9) == pytest.approx(30.0)
    assert aa.magnitude("ShearX", 9) == pytest.approx(0.3)
    assert [aa.magnitude("Posterize", m) for m in (8, 7, 6, 5)] == [4, 5, 5, 6]
    assert aa.magnitude("Solarize", 5) == pytest.approx(255 * 4 / 9)


def run_subpolicy(image, index, draws, signs):
    import keras

    out = aa.apply_subpolicies(
        keras.ops.convert_to_tensor(image[None].astype(np.float32)),
        keras.ops.convert_to_tensor([index]),
        keras.ops.convert_to_tensor([draws], "float32"),
        keras.ops.convert_to_tensor([signs], "float32"),
    )
    return np.asarray(out)[0]


@pytest.mark.parametrize("index", range(25))
def test_each_subpolicy_applies_its_steps_by_their_probabilities(image, index):
    (op1, p1, m1), (op2, p2, m2) = aa.IMAGENET_POLICY[index]
    amount1, amount2 = aa.magnitude(op1, m1), aa.magnitude(op2, m2)
    signs = (-1.0, 1.0)
    signed1 = -amount1 if op1 in aa.SIGNED else amount1
    below = lambda p: max(p - 1e-3, 0.0)  # noqa: E731  a draw just under the probability
    above = lambda p: min(p + 1e-3, 1.0)  # noqa: E731
    both = reference(reference(image, op1, signed1), op2, amount2)
    first_only = reference(image, op1, signed1)
    second_only = reference(image, op2, amount2)
    if p1 > 0 and p2 > 0:
        assert close(run_subpolicy(image, index, (below(p1), below(p2)), signs), both, 1.0, 0.03)
    if p1 > 0:
        assert close(run_subpolicy(image, index, (below(p1), above(p2)), signs), first_only)
    if p2 > 0:
        assert close(run_subpolicy(image, index, (above(p1), below(p2)), signs), second_only)
    untouched = run_subpolicy(image, index, (above(p1), above(p2)), signs)
    np.testing.assert_array_equal(untouched, image)  # neither step runs


def test_draws_are_uniform_over_subpolicies_and_probabilities():
    layer = aa.AutoAugment(seed=11)
    index, uniform, signs = (np.asarray(t) for t in layer.draws(20000))
    counts = np.bincount(index, minlength=25) / len(index)
    assert np.abs(counts - 1 / 25).max() < 0.01
    for p in (0.2, 0.4, 0.6, 0.8):
        assert abs((uniform[:, 0] < p).mean() - p) < 0.02
    assert abs((signs == 1).mean() - 0.5) < 0.02
    again = aa.AutoAugment(seed=11).draws(20000)[0]
    np.testing.assert_array_equal(np.asarray(again), index)  # the seed fixes them


def test_the_preset_runs_in_the_training_input_pipeline(digits_dataset):
    from components.evaluate.robustness import transforms_for
    from components.train import data
    from components.vision import augment

    augmenter = augment.build("autoaugment", seed=3)
    assert augmenter.layer_names == ["AutoAugment"]
    ds = data.split_dataset(digits_dataset, "train", 32, 10, 16, augment=augmenter, count=1257)
    images, labels = next(iter(ds))
    assert images.shape == (16, 32, 32, 3) and labels.shape == (16, 10)
    values = np.asarray(images)
    assert values.min() >= 0 and values.max() <= 255
    transforms = transforms_for("autoaugment", seed=0)
    assert {"AutoAugment.Invert", "AutoAugment.Rotate(30)"} <= set(transforms)
    flipped = transforms["AutoAugment.Invert"](values)
    np.testing.assert_allclose(flipped, 255 - values)
    assert augment.is_augmentation(augmenter.image_layers[0])
