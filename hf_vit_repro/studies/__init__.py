"""The paper's two experiments as commands (issue 16): the data-size study (Sec. 4.3, Figures 3
and 4: ResNets win on small pretraining data, ViT with enough of it) and the compute study
(Sec. 4.4, Figure 5 and Table 6: transfer accuracy against pretraining compute); and AugReg's
Figure 1 (issue 26: pretraining data size x augmentation/regularisation level). Section numbers
follow arXiv v2 (ICLR 2021 camera-ready): 4.3 is "Pre-training data requirements", 4.2 the
comparison to the state of the art.

    vit-repro study data-size recipes/studies/data_size.yaml     # the miniature, offline
    vit-repro study compute recipes/studies/compute.yaml
    vit-repro study augreg recipes/studies/augreg.yaml
    torchrun --standalone --nproc_per_node 2 -m hf_vit_repro study data-size CONFIG   # data-parallel

A study sits on top of training and evaluation: each of its runs is an ordinary recipe run
(`hf_vit_repro.training.run_recipe`) in its own folder, with nested seeded subsets
(`data.subset`) and early stopping on held-out data (`train.early_stopping_patience`), whose
summary carries its compute (`training.compute`); the pretrained models are then evaluated by
few-shot linear regression (`evaluation.fewshot_checkpoint`) and optionally fine-tuned. The
transfer is class-disjoint where it uses the pretraining task (pretrain on `data.classes`,
transfer to others; overlap is refused unless allowed), and every run may repeat over `seeds`,
the report showing each point's mean and min-max, beside each model's accuracy at initialisation
(`transfer.fewshot.scratch_reference`: no pretraining).

- `config`  the study config (YAML) and its validation
- `runner`  the plan of runs, their recipes, resuming, study.json
- `report`  the plots and the table, the paper's Table 6 as a reference
- `curves`  few-shot accuracy during pretraining (`transfer.fewshot.curve`): its figure and table
- `cli`     `vit-repro study ...`
"""

from __future__ import annotations

from .cli import add_cli
from .config import FAMILIES, KINDS, LevelEntry, ModelEntry, StudyConfig, StudyConfigError, load_study_config
from .report import paper_table6, plot_study, reference_points, study_figure, study_table, write_report
from .runner import STUDY_JSON, PlannedRun, finetune_recipe, plan_runs, pretrain_recipe, run_record, run_study

__all__ = [
    "FAMILIES", "KINDS", "LevelEntry", "ModelEntry", "PlannedRun", "STUDY_JSON", "StudyConfig", "StudyConfigError", "add_cli",
    "finetune_recipe", "load_study_config", "paper_table6", "plan_runs", "plot_study", "pretrain_recipe",
    "reference_points", "run_record", "run_study", "study_figure", "study_table", "write_report",
]
