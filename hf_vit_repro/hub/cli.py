"""`vit-repro push`: publish a run folder or checkpoint with its model card, or (`--space`) a Gradio
Space for a model already on the Hub."""

from __future__ import annotations

import argparse
import sys

from .card import DEFAULT_LICENSE
from .push import DEFAULT_TIMEOUT, push_to_hub


def _cmd_push(args: argparse.Namespace) -> int:
    try:
        result = _push(args)
    except KeyboardInterrupt as err:  # Ctrl-C or SIGTERM: temporary folders are already removed
        why = str(err) or "interrupted"
        print(f"vit-repro push: {why}; no temporary copy was left behind. Run the same command again to finish "
              "the upload (files the Hub already has are not sent twice).", file=sys.stderr)
        return 130
    return 0 if result is not None else 1


def _publishing_options(args: argparse.Namespace) -> dict:
    """The options a model push and a Space push share."""
    return dict(private=args.private, revision=args.revision, create_pr=args.create_pr,
                commit_message=args.commit_message, dry_run=args.dry_run, output_dir=args.output_dir,
                timeout=args.timeout, license=args.license)


def _push(args: argparse.Namespace):
    if args.space:
        return _push_space(args)
    return push_to_hub(
        args.source,
        args.repo_id,
        **_publishing_options(args),
        include_logs=args.include_logs,
        with_export=args.with_export,
        datasets=args.dataset,
        base_model=args.base_model,
        converted_from=args.converted_from,
        pretraining_data=args.pretraining_data,
        to=args.to,
        adapter_only=args.adapter_only,
    )


#: Flags of a model push that a Space push (`--space`) has no use for: (dest, flag, its value when not given).
_MODEL_ONLY_FLAGS = (("with_export", "--with-export", None), ("adapter_only", "--adapter-only", False),
                     ("to", "--to", "vit_repro"), ("dataset", "--dataset", None), ("base_model", "--base-model", None),
                     ("converted_from", "--converted-from", None), ("pretraining_data", "--pretraining-data", None))


def _push_space(args: argparse.Namespace):
    from .space import push_space

    given = [flag for dest, flag, unset in _MODEL_ONLY_FLAGS if getattr(args, dest) != unset]
    if given:
        raise ValueError(f"--space publishes a Gradio Space for a model already on the Hub; {', '.join(given)} "
                         "belong to the model's own push: run that first, without --space.")
    return push_space(args.source, args.repo_id, **_publishing_options(args), title=args.space_title,
                      emoji=args.space_emoji)


def add_cli(subparsers) -> None:
    from ..cli_options import add_output_dir

    p = subparsers.add_parser(
        "push",
        help="publish a run folder or checkpoint to the Hugging Face Hub with a model card",
        description="Build the repo folder of a run (weights, config with auto_map, shipped code, image processor, "
        "README.md model card and .eval_results/ from the run's results, metrics, figures, recipe, training logs), "
        "validate it, show it, and upload it with huggingface_hub. The token comes from HF_TOKEN or `hf auth login`.",
    )
    p.add_argument("source", help="run folder (with final/) or a save_pretrained checkpoint folder (with --adapter-only: "
                   "a LoRA run folder or its adapter folder)")
    p.add_argument("repo_id", help="Hub repo, 'namespace/name' (created if missing)")
    p.add_argument("--private", action="store_true", help="create the repo as private")
    p.add_argument("--revision", default=None, help="branch to commit to (created from main if missing)")
    p.add_argument("--create-pr", action="store_true", help="open a pull request instead of committing to main")
    p.add_argument("--commit-message", default=None, help="commit message")
    p.add_argument("--dry-run", action="store_true", help="write and validate the folder, upload nothing")
    add_output_dir(p, "for --dry-run outputs/hub/NAME")
    logs = p.add_mutually_exclusive_group()
    logs.add_argument("--no-logs", dest="include_logs", action="store_false",
                      help="leave out the run's training logs (logs/: TensorBoard event files, the step log), which are "
                      "uploaded by default")
    logs.add_argument("--include-logs", dest="include_logs", action="store_true",
                      help="upload the run's logs/ (the default; accepted for scripts written before it was)")
    p.set_defaults(include_logs=True)
    p.add_argument("--with-export", default=None, metavar="EXPORT_DIR",
                   help="also upload an ONNX export of this checkpoint (a folder written by `vit-repro export`, checked "
                   "against the checkpoint first) as onnx/model.onnx and onnx/model_quantized.onnx, where transformers.js "
                   "and optimum look for them")
    p.add_argument("--license", default=None, help=f"license of the weights (default {DEFAULT_LICENSE}; required with "
                   "--converted-from; with --space, the Space's)")
    p.add_argument("--dataset", action="append", default=None, help="Hub id of a training dataset (repeatable)")
    p.add_argument("--base-model", default=None, help="Hub id of the checkpoint this one was fine-tuned from")
    p.add_argument("--converted-from", default=None, help="source of converted published weights (e.g. google/vit-base-patch16-224)")
    p.add_argument("--pretraining-data", default=None,
                   help="what the checkpoint was pretrained on (ImageNet, ImageNet-21k, JFT-300M), where its run folders "
                   "do not say: the card then sets the paper's matching numbers beside the results")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                   help=f"seconds one request may wait for the Hub before the push stops (default {DEFAULT_TIMEOUT:g})")
    p.add_argument("--to", default="vit_repro", metavar="TARGET",
                   help="vit_repro (default: this package's classes, code shipped in the repo) or transformers "
                   "(transformers' own ViTForImageClassification / ViTModel / ViTForMaskedImageModeling, model_type "
                   "'vit', loads without remote code; the same card; refused, with the reason, for models it cannot "
                   "hold exactly, see `vit-repro convert --help`)")
    p.add_argument("--adapter-only", action="store_true",
                   help="publish only the peft adapter of a LoRA run (train.method: lora; SOURCE is the run folder, its "
                   "final/ or final/adapter/): adapter_config.json, adapter_model.safetensors, the image processor "
                   "config, the run's records and a card with library_name: peft, the method and base_model (the "
                   "run's model.init_from when it is a Hub id, else --base-model); loads with "
                   "PeftModel.from_pretrained(base, REPO)")
    p.add_argument("--space", action="store_true",
                   help="publish a Gradio Space instead: SOURCE is the model's Hub repo id (push it first), REPO_ID the "
                   "Space's; writes app.py (the `vit-repro app` demo loading the model by id), requirements.txt (pinned) "
                   "and README.md (Space metadata: sdk gradio, sdk_version, app_file, models, license), validates them "
                   "and uploads them (--dry-run: only writes them, to --output-dir)")
    p.add_argument("--space-title", default=None, help="with --space: the Space's title (default 'ViT MODEL_NAME')")
    p.add_argument("--space-emoji", default="🔭", help="with --space: the Space's emoji (default 🔭)")
    p.set_defaults(func=_cmd_push)


