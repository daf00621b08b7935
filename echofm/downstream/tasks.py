"""The downstream tasks, each registered once; CLI choices, flow parameters, fine-tuning,
evaluation, the pyfunc, registration and promotion all read `TASKS`.

Adding a task of a known kind is one `TASKS.register(Task(...))` here plus its tests; see
docs/architecture.md ("Adding a downstream task") for the recipe.
"""

from __future__ import annotations

from typing import Any, Literal

from echofm.downstream.task import LabelColumns, PromotionRule, Task, TaskRegistry

# Reduced ejection fraction: EF below 40 % (heart failure with reduced EF, HFrEF).
REDUCED_EF_THRESHOLD = 40.0
# The views EF is read from: the LV's long axis and its walls are in plane only in apical views.
APICAL_VIEWS: tuple[str, ...] = ("A2C", "A3C", "A4C", "A5C")
# The two orthogonal apical planes of the biplane area-length volume (single-plane from either).
BIPLANE_VIEWS: tuple[str, ...] = ("A4C", "A2C")

TASKS = TaskRegistry()

TASKS.register(Task(
    name="ef",
    title="ejection fraction (%)",
    kind="regression",
    label_columns=("ef",),
    promotion=PromotionRule("mae", higher_is_better=False, min_improvement=0.5),
    study_views=APICAL_VIEWS,
))

TASKS.register(Task(
    name="view",
    title="echo view",
    kind="multiclass",
    label_columns=("view",),
    promotion=PromotionRule("accuracy", higher_is_better=True, min_improvement=0.01),
    study_views=None,
))


def reduced_ef_target(columns: LabelColumns) -> Any:
    """1.0 when EF < 40 %, else 0.0: the table's own `reduced_ef` column when it has one,
    else derived from `ef` (missing where EF is)."""
    if columns.has("reduced_ef"):
        return columns("reduced_ef").astype(float)
    ef = columns("ef").astype(float)
    return (ef < REDUCED_EF_THRESHOLD).astype(float).where(ef.notna())


TASKS.register(Task(
    name="reduced_ef",
    title=f"reduced EF (EF < {REDUCED_EF_THRESHOLD:g} %)",
    kind="binary",
    label_columns=("reduced_ef", "ef"),
    target=reduced_ef_target,
    promotion=PromotionRule("auroc", higher_is_better=True, min_improvement=0.01),
    study_views=APICAL_VIEWS,
))

TASKS.register(Task(
    name="segmentation",
    title="LV segmentation (masks from mask_file)",
    kind="segmentation",
    label_columns=("mask_file",),
    promotion=PromotionRule("dice", higher_is_better=True, min_improvement=0.01),
    study_views=BIPLANE_VIEWS,
))

TASKS.register(Task(
    name="lvh",
    title="LV wall thickness and diameter, PLAX (IVS, LVID, LVPW in mm)",
    kind="regression",
    label_columns=("ivs_mm", "lvid_mm", "lvpw_mm"),
    outputs=("ivs_mm", "lvid_mm", "lvpw_mm"),
    promotion=PromotionRule("mae", higher_is_better=False, min_improvement=0.1),
))

TASKS.register(Task(
    name="aortic_stenosis",
    title="aortic stenosis: none, non-significant (mild, mild-to-moderate), significant (moderate, severe)",
    kind="multiclass",
    label_columns=("aortic_stenosis",),
    classes=("none", "non_significant", "significant"),
    promotion=PromotionRule("accuracy", higher_is_better=True, min_improvement=0.01),
))

# What a pipeline run fine-tunes when it is not told.
PIPELINE_TASKS: tuple[str, ...] = ("ef", "view")

# The task names as a type: the Prefect UI renders it as a choice list.
TaskName = Literal[TASKS.names()]  # type: ignore[valid-type]
