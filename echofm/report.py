"""The end-of-pipeline summary: what a data team reads after `echofm pipeline` or `make demo`.

Pure functions over the dictionaries the stage flows return (ingest summary, pretraining
`result.json`, fine-tuning results, registered versions) plus a read-only look-up of the loss
history in the MLflow store. Nothing here writes anywhere, and nothing here can carry a
patient-identifying value: the inputs are counts, metrics, pseudonymous ids and model URIs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def loss_history(tracking_uri: str, run_id: str, keys: Sequence[str] = ("loss", "recon_loss", "triplet_loss")) -> dict[str, list[tuple[int, float]]]:
    """`{metric: [(step, value), ...]}` of a pretraining run, read from the MLflow store."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    history: dict[str, list[tuple[int, float]]] = {}
    for key in keys:
        points = client.get_metric_history(run_id, key)
        history[key] = sorted((int(p.step), float(p.value)) for p in points)
    return history


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)


def _counts_line(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{key} {value}" for key, value in sorted(counts.items(), key=lambda kv: -kv[1])) or "none"


def _loss_lines(history: Mapping[str, Sequence[tuple[int, float]]]) -> list[str]:
    lines = []
    for key, points in history.items():
        if points:
            (first_step, first), (last_step, last) = points[0], points[-1]
            lines.append(f"  {key:<13} step {first_step}: {first:.4f}  ->  step {last_step}: {last:.4f}")
    return lines


def _downstream_lines(results: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """One line per task: the primary test metric of every arm (pretrained, random init, then
    each imported baseline of `--compare`), and the promotion decision."""
    from echofm.downstream.tasks import TASKS

    def arms(result: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
        found = {"pretrained": result.get("pretrained") or {}, "random": result.get("random_init") or {}}
        found.update({k: v for k, v in (result.get("baselines") or {}).items() if k != "random"})
        return found

    names = list(dict.fromkeys(name for result in results.values() for name in arms(result)))
    titles = {"pretrained": "pretrained", "random": "random init"}
    lines = [f"  {'task':<13}{'metric':<10}" + "".join(f"{titles.get(n, n):>13}" for n in names) + "  promotion"]
    behind = []
    for task, result in results.items():
        if task not in TASKS:
            continue  # a multi-task model: `_multitask_lines`
        metric, higher = TASKS[task].primary_metric, TASKS[task].higher_is_better
        found = arms(result)
        promotion = result.get("promotion") or {}
        decision = "promoted to champion" if promotion.get("promoted") else promotion.get("reason", "-")
        cells = "".join(f"{_fmt((found.get(n) or {}).get('test', {}).get(metric)):>13}" for n in names)
        lines.append(f"  {task:<13}{metric:<10}{cells}  {decision}")
        pretrained = (found.get("pretrained") or {}).get("test", {}).get(metric)
        random_init = (found.get("random") or {}).get("test", {}).get(metric)
        if random_init is not None and _better(pretrained, random_init, higher) != "pretrained":
            test = (result.get("counts") or {}).get("test") or {}
            clips, patients = test.get("clips"), test.get("patients")
            # The size of the test split is the first explanation a small archive owes.
            size = (f" on {clips} test clips" + (f" of {patients} patients" if patients else "")) if clips else ""
            behind.append(f"  {task}: the pretrained encoder does not beat random init ({metric} {_fmt(pretrained)} "
                          f"vs {_fmt(random_init)}{size}; the same head, split and epochs for both)")
    return lines + behind


def _better(pretrained: float | None, random_init: float | None, higher: bool) -> str:
    if pretrained is None or random_init is None:
        return "-"
    if pretrained == random_init:
        return "tie"
    return "pretrained" if (pretrained > random_init) == higher else "random init"


def _representation_lines(report: Mapping[str, Any] | None) -> list[str]:
    """The pretraining's last representation report, pretrained against random init."""
    from echofm.representation.gate import check_representation
    from echofm.representation.report import RepresentationReport

    if not report:
        return ["", "Representation: no report (pretraining ran without evaluation)"]
    parsed = RepresentationReport.from_dict(report)
    labelled = ", ".join(f"{k} {v}" for k, v in parsed.n_labelled.items()) or "none"
    return ["", f"Representation (frozen encoder at step {parsed.step}, {parsed.n_clips} clips, labelled: {labelled}):",
            *parsed.lines(), f"  {check_representation(parsed).reason}"]


def _multitask_lines(results: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Per multi-task model, its tasks' primary test metric beside the single-task models' and
    the random encoder's (same split, strategy and epochs), and its promotion."""
    from echofm.downstream.tasks import TASKS

    lines: list[str] = []
    for key, result in results.items():
        if key in TASKS:
            continue
        promotion = result.get("promotion") or {}
        decision = "promoted to champion" if promotion.get("promoted") else promotion.get("reason", "-")
        lines += ["", f"Multi-task model {key} (test split): {decision}",
                  f"  {'task':<13}{'metric':<10}{'multi-task':>12}{'single-task':>13}{'random init':>13}"]
        for task, row in (result.get("comparison") or {}).items():
            lines.append(f"  {task:<13}{row['metric']:<10}{_fmt(row['multitask']):>12}{_fmt(row['single_task']):>13}"
                         f"{_fmt(row['random_init']):>13}")
    return lines


def pipeline_report(
    *,
    ingest: Mapping[str, Any],
    pretrain: Mapping[str, Any],
    downstream: Mapping[str, Mapping[str, Any]],
    losses: Mapping[str, Sequence[tuple[int, float]]],
    registry: Mapping[str, Sequence[Mapping[str, Any]]],
    encoder_promotion: Mapping[str, Any] | None = None,
    ui_commands: Sequence[str] = (),
) -> str:
    """Plain-text summary of one pipeline run (the demo prints it)."""
    lines = ["", "EchoFM pipeline summary", "=" * 23, ""]
    lines.append(f"Ingestion: {ingest.get('files', 0)} new files -> {ingest.get('clips', 0)} clips "
                 f"({_fmt(ingest.get('clips_per_second'))} clips/s)")
    lines.append(f"  files by status: {_counts_line(ingest.get('by_status', {}))}")
    if ingest.get("by_reason"):
        lines.append(f"  reasons:         {_counts_line(ingest['by_reason'])}")
    if ingest.get("by_view"):
        lines.append(f"  views:           {_counts_line(ingest['by_view'])}")
    lines += ["", f"Pretraining: {pretrain.get('step', '-')} steps, final loss {_fmt(pretrain.get('final_loss'))}, "
              f"{_fmt(pretrain.get('clips_per_s'))} clips/s"]
    lines += _loss_lines(losses)
    lines += _representation_lines(pretrain.get("representation"))
    lines += ["", "Downstream (test split, same patient split for both encoders):"]
    lines += _downstream_lines(downstream)
    if encoder_promotion:
        decision = "promoted to champion" if encoder_promotion.get("promoted") else "not promoted"
        lines.append(f"  encoder: {decision} ({encoder_promotion.get('reason', '-')})")
    lines += _multitask_lines(downstream)
    lines += ["", "Registered models:"]
    for name, versions in registry.items():
        shown = ", ".join(
            f"v{v['version']}" + (f" @{'/@'.join(v['aliases'])}" if v["aliases"] else "") for v in versions
        )
        lines.append(f"  {name}: {shown}")
    if ui_commands:
        lines += ["", "Browse what this run produced:"]
        lines += [f"  {command}" for command in ui_commands]
    return "\n".join(lines) + "\n"
