"""Data: Hub datasets, the VTAB-1k tasks and the paper's transfer sets, with its preprocessing.

    from hf_vit_repro.data import load_task, finetune_transform, eval_transform, make_dataloader

    train = load_task("vtab/cifar100", "train800val200")       # datasets.Dataset: image, label
    loader = make_dataloader(train, finetune_transform(224, flip=True), batch_size=64,
                             shuffle=True, num_workers=4, seed=0)
    batch = next(iter(loader))  # {"pixel_values": (64, 3, 224, 224), "labels": (64,)}

Modules: `registry` (the task table `TASKS`, VTAB label rules), `loading` (`load_task`, VTAB-1k
splits, few-shot subsets), `transforms` (pretraining / fine-tuning / evaluation transforms,
mode conversion), `collate` (`ImageClassificationCollator`, `make_dataloader`). Only `loading`
and `collate` import `datasets`, and only inside functions.
"""

from .cli import add_cli
from .collate import (
    CorruptImageError,
    ImageClassificationCollator,
    SeededSampler,
    decode_image,
    make_dataloader,
    nested_subset,
    stable_permutation,
    subset_size,
)
from .loading import (
    DIGITS_TEST_SIZE,
    FEWSHOT_SHOTS,
    VTAB1K_SEED,
    DataError,
    class_names,
    classes_problem,
    digits_split_indices,
    export_vtab1k_indices,
    fewshot_subset,
    label_array,
    load_task,
    num_classes,
    select_classes,
    vtab1k_indices,
)
from .registry import LABEL_TRANSFORMS, TASKS, VTAB_GROUPS, VTAB_SPLITS, VTAB_TASKS, TaskSpec, get_task, registry_markdown
from .transforms import (
    VIT_MEAN,
    VIT_STD,
    eval_transform,
    fewshot_transform,
    finetune_transform,
    describe_image_processor,
    image_stats,
    pretrain_transform,
    task_transforms,
    to_rgb,
)

__all__ = [
    "add_cli",
    "TASKS",
    "TaskSpec",
    "VTAB_TASKS",
    "VTAB_GROUPS",
    "VTAB_SPLITS",
    "LABEL_TRANSFORMS",
    "get_task",
    "registry_markdown",
    "load_task",
    "fewshot_subset",
    "select_classes",
    "classes_problem",
    "label_array",
    "vtab1k_indices",
    "export_vtab1k_indices",
    "digits_split_indices",
    "class_names",
    "num_classes",
    "DataError",
    "DIGITS_TEST_SIZE",
    "FEWSHOT_SHOTS",
    "VTAB1K_SEED",
    "pretrain_transform",
    "finetune_transform",
    "eval_transform",
    "fewshot_transform",
    "task_transforms",
    "describe_image_processor",
    "image_stats",
    "to_rgb",
    "VIT_MEAN",
    "VIT_STD",
    "ImageClassificationCollator",
    "CorruptImageError",
    "SeededSampler",
    "decode_image",
    "make_dataloader",
    "stable_permutation",
    "nested_subset",
    "subset_size",
]
