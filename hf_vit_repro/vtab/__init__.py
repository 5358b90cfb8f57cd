"""The VTAB-1k benchmark runner (Zhai et al. 2019; the paper's Sec. 4.1, Appendix B.1.1): an
orchestrator like `hf_vit_repro.studies`, it fine-tunes a checkpoint on each task with the training
package and then scores it with `evaluation`, so it sits above both (DESIGN.md's order:
... -> evaluation -> training -> (vtab, studies) -> hub, analysis, export -> cli).

    vit-repro vtab RUN --tasks natural                     # vtab.json, vtab.md, vtab.png

- `runner`   the protocols (`paper`, `sweep`, `bit-hyperrule`), per-task recipes, resuming, the
             report (vtab.json / vtab.md / vtab.png) and the paper's Table 9 row to compare with
- `cli`      `vit-repro vtab ...` and `vit-repro vtab-methods ...`
- `methods`  the table by parameter-efficient method beside the published numbers (`paper_results.peft_vtab`)
- `recipes/` the default fine-tuning recipes as the package carries them (links to
             recipes/finetune_vtab.yaml and recipes/finetune_bit_vtab.yaml, copies in a wheel)
"""

from __future__ import annotations

from .cli import add_cli, add_vtab_cli
from .runner import (
    DEFAULT_LR_SWEEP,
    DEFAULT_PROTOCOL,
    PAPER_SETTING,
    PROTOCOLS,
    aggregate,
    base_recipe,
    checkpoint_identity,
    default_recipe_path,
    departures,
    paper_comparison,
    plot_vtab,
    protocol_of,
    resolve_tasks,
    run_vtab,
    task_recipe,
    vtab_report,
    vtab_table,
)

__all__ = [
    "DEFAULT_LR_SWEEP", "DEFAULT_PROTOCOL", "PAPER_SETTING", "PROTOCOLS", "add_cli", "add_vtab_cli", "aggregate",
    "base_recipe", "checkpoint_identity", "default_recipe_path", "departures", "paper_comparison", "plot_vtab",
    "protocol_of", "resolve_tasks", "run_vtab", "task_recipe", "vtab_report", "vtab_table",
]
