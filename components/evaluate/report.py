"""The evaluation report (HTML with images inline, Markdown for the KFP UI) and its plots."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from components.infra.html import figure_png
from components.infra.report import Report, Section, Table
from components.infra.report import write as write_report
from components.vision.images import encode_png


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def confusion_png(matrix: np.ndarray, classes: list[str]) -> bytes:
    plt = _pyplot()
    k = len(classes)
    fig, ax = plt.subplots(figsize=(max(4, 0.5 * k + 2), max(3.5, 0.5 * k + 1.5)))
    rows = matrix.sum(axis=1, keepdims=True)
    normalised = np.divide(matrix, rows, out=np.zeros_like(matrix, dtype=float), where=rows > 0)
    image = ax.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(k), classes, rotation=90 if k > 12 else 0)
    ax.set_yticks(range(k), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if k <= 30:
        for i in range(k):
            for j in range(k):
                if matrix[i, j]:
                    ax.text(
                        j,
                        i,
                        str(matrix[i, j]),
                        ha="center",
                        va="center",
                        fontsize=8,
                        color="white" if normalised[i, j] > 0.5 else "black",
                    )
    fig.colorbar(image, ax=ax, label="fraction of true class")
    ax.set_title("confusion matrix (counts; colour: row-normalised)")
    return figure_png(fig)


def calibration_paragraphs(metrics: dict) -> list[tuple[str, str]]:
    ece = f"Expected calibration error: {metrics['ece']:.4f}"
    if "ece_uncalibrated" not in metrics:
        return [("", ece)]
    calibration = metrics.get("calibration") or {}
    if metrics.get("temperature", 1.0) == 1.0:
        why = (
            "temperature scaling is off (evaluate.calibrate)"
            if calibration.get("fitted_on") is None
            else "a temperature fitted on val did not improve it, so none is applied"
        )
        return [("", f"{ece}; {why}.")]
    return [
        (
            "",
            f"{ece} with temperature {metrics['temperature']:.3f} (fitted on "
            f"{calibration.get('count', 0)} val images, baked into every exported format); "
            f"{metrics['ece_uncalibrated']:.4f} before. Log loss {metrics['log_loss']:.4f} "
            f"({metrics['log_loss_uncalibrated']:.4f} before). Accuracy is unchanged.",
        )
    ]


def reliability_png(reliability: list[dict], before: list[dict] | None = None) -> bytes:
    """The shipped probabilities' reliability, and the raw model's (`before`) where a
    temperature changed them."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
    for table, style, label in (
        (before, "s:", "before scaling"),
        (reliability, "o-", "model" if before is None else "after scaling (shipped)"),
    ):
        if table:
            ax.plot(
                [b["confidence"] for b in table],
                [b["accuracy"] for b in table],
                style,
                label=label,
            )
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.legend()
    ax.set_title("reliability diagram")
    return figure_png(fig)


@dataclass
class Extras:
    """Arrays the picture sections of the report draw from."""

    images: np.ndarray  # (N, S, S, 3) uint8 test images
    train_images: np.ndarray
    labels: np.ndarray
    probs: np.ndarray
    classes: list[str]
    uris: list[str]
    train_uris: list[str]
    gallery: dict[str, dict[str, list[int]]]
    label_errors: list[dict]
    order: np.ndarray  # misclassified test indices, most confident first
    limit: int
    overlays: dict[int, np.ndarray] = field(default_factory=dict)  # test index -> Grad-CAM
    # (class, its test image, [(layer, (channels, h, w) maps in 0..1)]) per class
    feature_maps: list = field(default_factory=list)


THUMB = 96  # pixels: the side of a thumbnail in the report's grids
CAPTION = 14  # pixels of caption text above each thumbnail
COLOURS = {"red": (200, 30, 30), "green": (20, 130, 40), "black": (20, 20, 20)}


def caption_font(image_font):
    """DejaVu Sans (bundled with matplotlib: it has the arrow and tick of the captions),
    else Pillow's own font."""
    import matplotlib

    path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    if path.is_file():
        return image_font.truetype(str(path), 11)
    return image_font.load_default(size=11)


def thumb_grid(rows: list[list[tuple[np.ndarray, str, str]]], title: str) -> bytes:
    """A grid of thumbnails; each cell is (image, caption, caption colour). Composed with
    Pillow (pixel-exact thumbnails, nearest-neighbour for small images): matplotlib spent
    about 40 ms per cell, seconds per evaluation for a few hundred cells."""
    from PIL import Image, ImageDraw, ImageFont

    font = caption_font(ImageFont)
    width = max((len(r) for r in rows), default=1)
    pad, head = 6, 22
    cell_w, cell_h = THUMB + pad, THUMB + CAPTION + pad
    sheet = Image.new("RGB", (pad + width * cell_w, head + len(rows) * cell_h), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((pad, 5), title, fill=COLOURS["black"], font=font)
    for r, row in enumerate(rows):
        for c, (image, caption, colour) in enumerate(row):
            picture = Image.fromarray(np.asarray(image, np.uint8)).convert("RGB")
            scale = THUMB / max(picture.size)  # small images up without blurring them
            size = (max(1, round(picture.width * scale)), max(1, round(picture.height * scale)))
            small = max(picture.size) < THUMB
            resample = Image.Resampling.NEAREST if small else Image.Resampling.LANCZOS
            picture = picture.resize(size, resample)
            x, y = pad + c * cell_w, head + r * cell_h
            draw.text((x, y), caption[:18], fill=COLOURS.get(colour, COLOURS["black"]), font=font)
            sheet.paste(picture, (x, y + CAPTION))
    return encode_png(sheet)


def simple_baselines_section(metrics: dict[str, Any]) -> Section | None:
    """The model against the majority class and a logistic regression on the pixels."""
    found = metrics.get("baselines")
    if not found:
        return None
    rows = [["this model", metrics["accuracy"], metrics["macro_f1"], ""]]
    majority = found["majority"]
    rows.append(["majority class", majority["accuracy"], majority["macro_f1"],
                 f"always '{majority['class']}'"])  # fmt: skip
    learned = found.get("logistic_regression")
    if learned:
        rows.append(["logistic regression", learned["accuracy"], learned["macro_f1"],
                     f"{learned['features']}, {learned['train_images']} train images"])  # fmt: skip
    section = Section(
        "Baselines", tables=[Table(["model", "test accuracy", "macro F1", "how"], rows)]
    )
    if "gain_over_logistic" in found:
        section.say(f"Gain over the logistic regression: {found['gain_over_logistic']:+.4f}.")
    return section


def gallery_rows(x: Extras, pictures) -> list[list[tuple[np.ndarray, str, str]]]:
    """The gallery's cells per class: `pictures(i)` is what test image i shows as."""
    classes, probs, rows = x.classes, x.probs, []
    for name, picks in x.gallery.items():
        row = [
            (pictures(i), f"{name}→{classes[probs[i].argmax()]} {probs[i].max():.2f}", "red")
            for i in picks["confident_mistakes"]
        ]
        row += [
            (pictures(i), f"{name} ✓ {probs[i].max():.2f}", "green")
            for i in picks["unsure_correct"]
        ]
        if row:
            rows.append(row)
    return rows


GALLERY_TITLE = "per class: most confident mistakes (red), least confident correct (green)"


def looking_sections(x: Extras) -> list[Section]:
    """Grad-CAM over the gallery's images; the first conv layers' feature maps per class."""
    cams = Section("Where the model looks (Grad-CAM)", in_markdown=False)
    if x.overlays:
        cams.say(
            "The gallery's images with the Grad-CAM map of the predicted class over them "
            "(red: the evidence it used). `visionpipe explain` writes the maps for any image."
        )
        cams.picture = thumb_grid(gallery_rows(x, x.overlays.__getitem__), GALLERY_TITLE)
        cams.picture_alt = "Grad-CAM over the error gallery"
    maps = Section("First convolutional layers", in_markdown=False)
    rows = []
    for name, image, layers in x.feature_maps:
        row = [(image, name, "black")]
        for layer, channels in layers:
            grey = [np.repeat((c[..., None] * 255).astype(np.uint8), 3, axis=2) for c in channels]
            row += [(g, f"{layer.split('/')[-1]} #{k}", "black") for k, g in enumerate(grey[:6])]
        rows.append(row)
    if rows:
        maps.picture = thumb_grid(rows, "one test image per class, then feature maps")
        maps.picture_alt = "feature maps"
    return [s for s in (cams, maps) if s.picture]


def picture_sections(extras: Extras, errors: list[dict]) -> list[Section]:
    x = extras
    rows = gallery_rows(x, x.images.__getitem__)
    gallery = Section("Error gallery", empty="No test images.", in_markdown=False)
    if rows:
        gallery.picture = thumb_grid(rows, GALLERY_TITLE)
        gallery.picture_alt = "error gallery"
    neighbour_rows = []
    index_of = {uri: i for i, uri in enumerate(x.train_uris)}
    for test_index, error in zip(x.order[: x.limit], errors[: x.limit], strict=False):
        row = [(x.images[test_index], f"{error['true']}→{error['predicted']}", "red")]
        row += [
            (
                x.train_images[index_of[n["uri"]]],
                f"train {n['label']} {n['similarity']:.2f}",
                "black",
            )
            for n in error["nearest_train"]
        ]
        neighbour_rows.append(row)
    nearest = Section(
        "Nearest training images", empty="No misclassified test images.", in_markdown=False
    )
    if neighbour_rows:
        nearest.picture = thumb_grid(
            neighbour_rows,
            "misclassified test image, then its nearest training images "
            "(penultimate-layer cosine similarity)",
        )
        nearest.picture_alt = "nearest training images"
    labels = Section("Likely label errors", empty="None above the confidence threshold.")
    if x.label_errors:
        labels.say(
            f"{len(x.label_errors)} items whose given label the model contradicts with high "
            "confidence (all in label_errors.json); review them before trusting the labels."
        )
    labels.tables.append(
        Table(
            ["split", "file", "given", "model says", "p(model)", "p(given)"],
            [
                [e["split"], e["uri"], e["given"], e["suggested"], e["p_suggested"], e["p_given"]]
                for e in x.label_errors
            ],
            limit=x.limit,
        )
    )
    return [gallery, *looking_sections(x), nearest, labels]


def robustness_section(robust: dict[str, Any]) -> Section:
    section = Section("Robustness")
    flagged = [name for name, r in robust["transforms"].items() if r["flagged"]]
    if flagged:
        section.say(
            f"Probably not label-preserving here: {', '.join(flagged)} "
            f"(some class loses at least {robust['flag_drop']:.0%} accuracy).",
            "bad",
        )
    else:
        section.say(f"No transform costs any class {robust['flag_drop']:.0%} accuracy.")
    section.tables.append(
        Table(
            ["transform", "accuracy", "drop", "flagged classes"],
            [
                [
                    name,
                    r["accuracy"],
                    robust["clean_accuracy"] - r["accuracy"],
                    ", ".join(r["flagged_classes"]) or "-",
                ]
                for name, r in robust["transforms"].items()
            ],
        )
    )
    return section


def slices_section(slices: dict[str, list[dict]], limit: int) -> Section:
    section = Section("Slices", empty="The test manifest has no metadata columns to slice by.")
    for column, values in slices.items():
        section.tables.append(
            Table(
                ["value", "count", "accuracy"],
                [[v["value"], v["count"], v["accuracy"]] for v in values],
                limit=limit,
                caption=column,
            )
        )
    return section


def baseline_section(baseline: dict[str, Any] | None) -> Section | None:
    """The candidate beside the baseline, on the same images: the known and the new part
    side by side, and the paired test that decides."""
    if not baseline:
        return None
    section = Section("Against the baseline")
    if not baseline.get("found"):
        return section.say(f"No model is published at {baseline['model']} yet: no comparison.")
    if baseline.get("classes_changed"):
        return section.say(
            f"Not compared with {baseline['model']}: the classes changed since "
            f"({baseline['classes_changed']}); the thresholds decide."
        )
    if not baseline.get("comparable"):
        return section.say(f"{baseline['model']}: every test image was in its train or val split.")
    part = {
        "known": "its own test images, labels unchanged (known)",
        "both": "test images neither trained on, known and new",
    }.get(baseline.get("gate_part"), "test images neither trained on")
    section.say(
        f"The gate compares the candidate with {baseline['model']} on the {baseline['images']} "
        f"{part}; {baseline['excluded_seen_by_baseline']} test images are left out because the "
        f"baseline trained or validated on them, {baseline.get('relabelled_since_baseline', 0)} "
        "because their label changed since."
    )
    few = baseline.get("too_few_known")
    if few:
        action = "the gate refuses" if few["policy"] == "refuse" else "the known and new are used"
        section.say(
            f"Only {few['known']} known test images, fewer than evaluate.min_known_images "
            f"{few['min_known_images']}: {action} (evaluate.few_known_images {few['policy']}).",
            "bad",
        )
    for name, found in baseline.get("parts", {}).items():
        section.tables.append(
            Table(
                ["metric", "candidate", baseline["model"], "difference"],
                [
                    [metric, value, found["baseline"][metric], value - found["baseline"][metric]]
                    for metric, value in found["candidate"].items()
                ],
                caption=f"{name} test images ({found['images']})",
            )
        )
    paired_lines(section, baseline.get("paired"))
    macro = baseline.get("macro_f1")
    if macro:
        section.say(
            f"Macro F1 on the same images: {macro['before']:.4f} ({baseline['model']}) -> "
            f"{macro['after']:.4f} (candidate), a change of {-macro['drop']:+.4f}."
        )
    changed = [row for row in baseline.get("per_class", []) if row["lost"] or row["gained"]]
    if changed:
        section.tables.append(
            Table(
                ["class", "images", "recall before", "recall after", "lost", "gained",
                 "p(worse)", "refused"],
                [
                    [r["class"], r["images"], r["recall_before"], r["recall_after"],
                     len(r["lost"]), len(r["gained"]), r["p_worse_mcnemar_exact"], r["refused"]]
                    for r in changed
                ],
                caption="classes whose images changed between the two models (blessing.json "
                "lists the images)",
            )
        )  # fmt: skip
    return section


def paired_lines(section: Section, test: dict[str, Any] | None) -> None:
    """The non-inferiority verdict and what these images can detect, loudly when nothing."""
    if not test:
        return
    from components.evaluate.paired import describe

    css = "good" if test["verdict"] == "shown" else "bad"
    section.say(f"Paired comparison ({test['test']}): {test['verdict']}; {describe(test)}.", css)
    smallest = test["resolution"]
    if test["can_detect_margin"]:
        section.say(
            f"On {test['images']} images the smallest regression this comparison can tell from "
            f"none is {smallest['accuracy_points']:.4f} accuracy ({smallest['images']} images), "
            f"below the margin {test['margin']}."
        )
    else:
        section.say(
            f"THESE {test['images']} IMAGES CANNOT DETECT A REGRESSION OF {test['margin']}: the "
            f"smallest they can tell from none is {smallest['accuracy_points']:.4f} accuracy; "
            "no candidate can be shown within the margin on them.",
            "bad",
        )


def ensemble_section(ensemble: dict[str, Any] | None) -> Section | None:
    """Each member of an averaged ensemble beside the average (the model that ships)."""
    if not ensemble:
        return None
    section = Section("Ensemble members")
    verdict = "beats" if ensemble["beats_best_member"] else "does not beat"
    section.say(
        f"The average of {len(ensemble['members'])} members {verdict} its best member on test "
        f"accuracy ({ensemble['average']['accuracy']:.4f} against "
        f"{ensemble['best_member_accuracy']:.4f})."
    )
    keys = ("accuracy", "macro_f1", "log_loss", "ece")
    rows = [[m["member"], *(m[k] for k in keys)] for m in ensemble["members"]]
    rows.append(["average (shipped)", *(ensemble["average"][k] for k in keys)])
    section.tables.append(Table(["model", *keys], rows))
    return section


HEADLINE = (
    "accuracy",
    "macro_f1",
    "weighted_f1",
    "worst_class_recall",
    "log_loss",
    "ece",
    "ece_uncalibrated",
    "temperature",
    "roc_auc_ovr",
    "count",
)


def headline_rows(metrics: dict[str, Any]) -> list[list[Any]]:
    names = ("accuracy", *[k for k in metrics if k.startswith("top_")], *HEADLINE[1:])
    return [[name, metrics[name]] for name in names if name in metrics]


def gate_section(blessing: dict[str, Any]) -> Section:
    rows = [[c["metric"], c["value"], c["threshold"], c["passed"]] for c in blessing["checks"]]
    return Section("Gate", tables=[Table(["metric", "value", "threshold", "passed"], rows)])


def sampling_section(sampling: dict[str, Any] | None) -> Section | None:
    """What was measured on all of a split and what on a sample."""
    if not sampling:
        return None
    train, robust = sampling["train_analysis"], sampling["robustness"]

    def part(found: dict, split: str) -> str:
        if found["sampled"]:
            return (
                f"a stratified sample of {found['images']:,} of the {found['of']:,} "
                f"{split} images (evaluate limit {found['limit']:,})"
            )
        return f"all {found['of']:,} {split} images"

    return Section("What was measured on what").say(
        "Metrics, calibration, mistakes and slices: every test image. Likely "
        f"label errors and nearest training images: {part(train, 'train')}. "
        f"Robustness: {part(robust, 'test')}."
    )


def per_class_section(metrics: dict[str, Any]) -> Section:
    rows = [
        [name, v["precision"], v["recall"], v["f1"], v["support"]]
        for name, v in metrics["per_class"].items()
    ]
    return Section(
        "Per class", tables=[Table(["class", "precision", "recall", "f1", "support"], rows)]
    )


def confused_section(pairs: list[dict], limit: int) -> Section:
    rows = [[p["true"], p["predicted"], p["count"]] for p in pairs]
    return Section(
        "Most confused pairs",
        tables=[Table(["true", "predicted", "count"], rows, limit=limit)],
        empty="No mistakes.",
    )


def calibration_section(metrics: dict[str, Any]) -> Section:
    scaled = metrics.get("temperature", 1) != 1
    return Section(
        "Calibration",
        paragraphs=calibration_paragraphs(metrics),
        picture=reliability_png(
            metrics["reliability"], metrics.get("reliability_uncalibrated") if scaled else None
        ),
        picture_alt="reliability diagram",
    )


def errors_section(errors: list[dict], limit: int) -> Section:
    rows = [[e["uri"], e["true"], e["predicted"], e["p_predicted"], e["p_true"]] for e in errors]
    return Section(
        "Misclassified test images",
        paragraphs=[("", f"{len(errors)} in all, every one in errors.csv.")] if errors else [],
        tables=[Table(["file", "true", "predicted", "p(predicted)", "p(true)"], rows, limit)],
        empty="None.",
    )


def write(
    folder: Path,
    metrics: dict[str, Any],
    blessing: dict[str, Any],
    errors: list[dict],
    pairs: list[dict],
    confusion_png_bytes: bytes,
    extras: Extras | None = None,
    limit: int = 50,
) -> None:
    """report.html and report.md, from one report model; tables stop at `limit` rows. The
    rows are built by the *_section helpers above; the templates do the layout."""
    verdict = "blessed" if blessing["blessed"] else "NOT blessed"
    lead = verdict + ("" if blessing["blessed"] else ": " + "; ".join(blessing["reasons"]))
    report = Report(
        "visionpipe evaluation report",
        lead=[("good" if blessing["blessed"] else "bad", lead)],
        markdown_footer="Thumbnails and nearest training images: report.html.",
    )
    pictures = picture_sections(extras, errors) if extras is not None else []
    sections = [
        gate_section(blessing),
        baseline_section(blessing.get("baseline")),
        simple_baselines_section(metrics),
        Section("Headline metrics", tables=[Table(["metric", "value"], headline_rows(metrics))]),
        sampling_section(metrics.get("sampling")),
        ensemble_section(metrics.get("ensemble")),
        per_class_section(metrics),
        Section(
            "Confusion matrix",
            picture=confusion_png_bytes,
            picture_alt="confusion matrix",
            in_markdown=False,
        ),
        confused_section(pairs, limit),
        calibration_section(metrics),
        errors_section(errors, limit),
        *pictures,
        slices_section(metrics["slices"], limit) if "slices" in metrics else None,
        robustness_section(metrics["robustness"]) if "robustness" in metrics else None,
    ]
    files = {  # also files: TensorBoard and MLflow show them
        "Error gallery": "error_gallery.png",
        "Where the model looks (Grad-CAM)": "gradcam_gallery.png",
        "First convolutional layers": "feature_maps.png",
    }
    for picture in pictures:
        if picture.title in files and picture.picture:
            (Path(folder) / files[picture.title]).write_bytes(picture.picture)
    for section in sections:
        if section is not None:
            report.add(section)
    write_report(report, folder)
