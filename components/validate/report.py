"""The validation report: the data report's section "against the deployed version"
(report.html, and report.md for the KFP UI), from one report model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from components.infra.report import Report, Section, Table
from components.infra.report import write as write_report
from components.validate.config import ValidateConfig


def shown(value: Any) -> str:
    if isinstance(value, dict):
        if all(isinstance(v, int | float) for v in value.values()):
            return ", ".join(f"{k} {v:g}" for k, v in value.items())
        return f"{len(value)} entries (anomalies.json)"
    if isinstance(value, list):
        return ", ".join(map(str, value)) or "none"
    return "" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def lead(result: dict[str, Any]) -> list[tuple[str, str]]:
    if not result["compared"]:
        return [("", result["note"])]
    counts = result["counts"]
    decision = result["decision"]
    return [
        (
            "bad" if decision == "stop" else "",
            f"Against {result['reference_label']}: {counts['images']} images today, "
            f"{counts['new']} new, {counts['known']} known with the same label, "
            f"{counts['relabelled']} known with another label. {len(result['anomalies'])} "
            f"anomalies, {len(result['accepted'])} accepted, {len(result['skipped'])} checks "
            f"skipped; policy {result['policy']}, on skipped {result['on_skipped']}, "
            f"decision: {decision}.",
        )
    ]


def checks_section(result: dict[str, Any]) -> Section:
    rows = [
        [
            c["check"],
            shown(c["value"]),
            shown(c["threshold"]),
            c["verdict"] + (" (accepted)" if c.get("accepted") else ""),
            c["reason"] or (c.get("detail") or {}).get("note") or "; ".join(c["classes"]),
        ]
        for c in result["checks"]
    ]
    return Section(
        "Checks",
        tables=[
            Table(["check", "value", "threshold", "verdict", "classes / note / why skipped"], rows)
        ],
        empty="No checks ran.",
    )


def anomalies_section(result: dict[str, Any]) -> Section:
    section = Section("Anomalies")  # paragraphs only: the empty text is said below
    for line in result["anomalies"]:
        section.say(line, "bad")
    for line in result["accepted"]:
        section.say(f"accepted (validate.accept): {line}")
    if not result["anomalies"] and not result["accepted"]:
        section.say("None.")
    return section


def skipped_section(result: dict[str, Any]) -> Section:
    """Checks that could not run: never counted as passed."""
    section = Section("Skipped checks")
    policy = result["on_skipped"]
    for line in result["skipped"]:
        section.say(f"skipped (validate.on_skipped={policy}): {line}", "bad")
    if not result["skipped"]:
        section.say("None: every check ran.")
    return section


def files_sections(result: dict[str, Any], limit: int) -> list[Section]:
    sections = []
    for check in result["checks"]:
        if check["verdict"] != "anomaly" or not check["files"]:
            continue
        header = list(check["files"][0])
        sections.append(
            Section(
                f"Files named by {check['check']}",
                tables=[Table(header, [[f[h] for h in header] for f in check["files"]], limit)],
            )
        )
    return sections


def write(folder: Path, result: dict[str, Any], config: ValidateConfig) -> None:
    report = Report("visionpipe data validation", lead=lead(result))
    if result["compared"]:
        report.add(anomalies_section(result))
        report.add(skipped_section(result))
        report.add(checks_section(result))
        for section in files_sections(result, config.max_listed):
            report.add(section)
        sample = result["sample"]
        report.add(
            Section("Samples the model-based checks used").say(
                "; ".join(
                    f"{g}: {s['images']} images (at most {s['limit']})" for g, s in sample.items()
                )
                + f". The reference images: {result['reference_sample']}."
            )
        )
    write_report(report, folder)
