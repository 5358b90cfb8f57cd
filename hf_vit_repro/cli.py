"""`vit-repro`: the command-line door into the package. Each subcommand is a thin wrapper
around a library function; `vit-repro SUBCOMMAND --help` documents it."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time


def _cmd_variants(args: argparse.Namespace) -> int:
    import torch

    from .configuration_vit_repro import ViTReproConfig
    from .modeling_vit_repro import ViTReproModel
    from .variants import HYBRIDS, PATCH_SIZES, SIZES

    patches = [args.patch] if args.patch else PATCH_SIZES
    names = [f"ViT-{size}/{patch}" for size in SIZES for patch in patches]
    names += [name for name in HYBRIDS if not args.patch or name.endswith(f"/{args.patch}")]
    print(f"{'variant':<13} {'layers':>6} {'hidden':>6} {'mlp':>6} {'heads':>5} {'params (no head)':>17}")
    for name in names:
        config = ViTReproConfig.from_variant(name, image_size=args.image_size)
        with torch.device("meta"):  # count parameters without allocating them
            model = ViTReproModel(config)
        count = sum(p.numel() for p in model.parameters())
        print(f"{name:<13} {config.num_hidden_layers:>6} {config.hidden_size:>6} {config.intermediate_size:>6} "
              f"{config.num_attention_heads:>5} {count / 1e6:>16.1f}M")
    if args.patch is None:
        _print_bit_variants()
    return 0


def _print_bit_variants() -> None:
    """The BiT ResNets (`variants.BIT_VARIANTS`), counted as `BitModel` without a head (resolution-free)."""
    import torch
    from transformers import BitModel

    from .variants import BIT_VARIANTS, bit_config

    print(f"\n{'BiT ResNet':<11} {'depth':>5} {'width':>5} {'blocks per stage':>17} {'params (no head)':>17}")
    for name, (depth, width) in BIT_VARIANTS.items():
        config = bit_config(name)
        with torch.device("meta"):
            count = sum(p.numel() for p in BitModel(config).parameters())
        blocks = ", ".join(map(str, config.depths))
        print(f"{name:<11} {depth:>5} {'x' + str(width):>5} {blocks:>17} {count / 1e6:>16.1f}M")


def _cmd_convert(args: argparse.Namespace) -> int:
    from .convert import convert

    out = convert(
        args.source,
        args.output_dir,
        image_size=args.image_size,
        num_labels=args.num_labels,
        allow_pickle=args.allow_pickle,
        architecture=args.timm_architecture,
        to=args.to,
    )
    if args.to == "timm":
        print(f"Wrote {out} (load it with timm.create_model({'local-dir:' + str(out)!r}, pretrained=True))")
    else:
        print(f"Wrote {out} (load it with {_auto_class_of(out)}.from_pretrained({str(out)!r}))")
        _print_augreg(out)
    return 0


def _print_augreg(folder) -> None:
    """Say what an AugReg file name told `convert` (config.json's `augreg`, `convert_augreg`)."""
    import json
    from pathlib import Path

    from .convert_augreg import card_rows

    augreg = json.loads((Path(folder) / "config.json").read_text()).get("augreg")
    if isinstance(augreg, dict):
        facts = "; ".join(f"{key.lower()}: {value.replace('`', '')}" for key, value in card_rows(augreg)[1:])
        print(f"Read from the AugReg file name (config.json `augreg`, shown in the model card): {facts}")


def _auto_class_of(folder) -> str:
    """The Auto class that loads the model class a checkpoint folder was saved from."""
    import json
    from pathlib import Path

    from .convert_native import auto_class_name

    return auto_class_name(json.loads((Path(folder) / "config.json").read_text()).get("architectures") or [])


# Modules that add their own subcommands: each defines `add_cli(subparsers)`, which adds a parser
# whose `func(args) -> int` default runs the command. Such modules keep their heavy imports
# (matplotlib, datasets, ...) inside functions so `vit-repro --help` stays fast.
SUBCOMMAND_MODULES: list[str] = [
    "analysis", "data", "evaluation", "training", "vtab", "demo", "hub", "export", "studies", "app",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vit-repro",
        description="The Vision Transformer (Dosovitskiy et al., 2021) for the Hugging Face ecosystem.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("variants", help="print the tables of named ViT variants and BiT ResNets with parameter counts")
    p.add_argument("--image-size", type=int, default=224, help="resolution the ViT counts are for (default 224)")
    p.add_argument("--patch", type=int, default=None, help="only ViTs of this patch size (and no BiT table)")
    p.set_defaults(func=_cmd_variants)

    p = sub.add_parser(
        "convert",
        help="convert a published ViT or BiT ResNet checkpoint to this package's format (or back to transformers' "
        "or timm's own)",
        description="Convert a published ViT checkpoint into a folder that AutoModelForImageClassification."
        "from_pretrained loads, with or without this package installed, with an image processor config matching "
        "the source's preprocessing (mean, std, resampling filter; for timm sources also timm's evaluation crop: "
        "shortest edge to size / crop_pct, centre crop, as transformers' BitImageProcessor; a transformers "
        "ViTForMaskedImageModeling becomes this package's "
        "masked-image-modeling class, for AutoModelForMaskedImageModeling). Sources: a transformers ViT (folder or "
        "Hub repo id), a timm hub repo (folder or repo id with config.json + model.safetensors; plain ViTs and the BiT hybrids), an original JAX .npz "
        "(google-research/vision_transformer, AugReg or big_vision layout; the architecture is read off the "
        "arrays), a bare timm weights file with --timm-architecture, or a checkpoint of this package (a run's "
        "final/ folder). BiT ResNets (timm's resnetv2_*_bit repos, "
        "google-research/big_transfer's BiT-M-R50x1.npz-style files) become transformers' own "
        "BitForImageClassification (model_type 'bit', no remote code). --to transformers or --to timm writes "
        "the model in transformers' or timm's own classes instead, where it maps exactly.",
    )
    p.add_argument(
        "source",
        help="folder, Hub repo id (google/vit-base-patch16-224, timm/vit_base_patch16_224.augreg2_in21k_ft_in1k, "
        "timm/resnetv2_50x1_bit.goog_in21k), .npz file (ViT-B_16.npz, R50+ViT-B_16.npz, BiT-M-R50x1.npz) or weights file",
    )
    p.add_argument("output_dir", help="folder to write (config, safetensors weights, code, image processor)")
    p.add_argument(
        "--image-size", type=int, default=None,
        help="resample position embeddings to this resolution (e.g. 384 for a checkpoint trained at 224); for a "
        "BiT ResNet, the resolution recorded with it and its image processor",
    )
    p.add_argument("--num-labels", type=int, default=None, help="replace the head by a zero-initialised K-way one")
    p.add_argument(
        "--allow-pickle", action="store_true",
        help="allow reading pickle files (pytorch_model.bin, .pth); unpickling can run code: only for sources you trust",
    )
    p.add_argument(
        "--timm-architecture", default=None, metavar="NAME",
        help="timm model name of a bare weights file, e.g. vit_base_patch16_224",
    )
    p.add_argument(
        "--to", default="vit_repro", metavar="TARGET",
        help="what to write: vit_repro (default: this package's checkpoint, its code shipped beside it), "
        "transformers (transformers' own ViTForImageClassification / ViTModel / ViTForMaskedImageModeling, "
        "model_type 'vit', no remote code; refused, with the reason, for global average pooling, the hybrids, a "
        "pre-logits layer under a head, masked patch prediction) or timm (model.safetensors in timm's names + "
        "config.json with architecture, model_args and pretrained_cfg, for timm.create_model('local-dir:OUT', "
        "pretrained=True); plain ViTs and timm's hybrids; refused for a pre-logits layer, other LayerNorm "
        "epsilons, other hybrid CNNs, BiT)",
    )
    p.set_defaults(func=_cmd_convert)

    import importlib

    for module_name in SUBCOMMAND_MODULES:
        importlib.import_module(f"hf_vit_repro.{module_name}").add_cli(sub)
    # `run.push_to_hub`: training calls the publisher it is given; the hub, a higher room, is it
    sub.choices["train"].set_defaults(publish=publish_run)
    return parser


def publish_run(run_dir, repo_id: str):
    """`hf_vit_repro.hub.push_run(run_dir, repo_id)`, imported when a run is published."""
    from .hub import push_run

    return push_run(run_dir, repo_id)


def user_error_message(err: BaseException) -> str | None:
    """The one-line message of an error caused by bad input, or None for anything else (a bug,
    which keeps its traceback).

    Bad input is what the library raises as ValueError (and its subclasses: ConversionError,
    runs.CheckpointError, ...), OSError (missing or unreadable files) or KeyError, and what
    huggingface_hub's strict config validation raises (StrictDataclassError, whose cause holds the
    message of the rule broken), and an ImportError whose message says what to `pip install` (an
    extra the command needs). Line breaks are folded: the user sees one line."""
    if isinstance(err, ImportError) and "pip install" in str(err):
        message = str(err)
    elif isinstance(err, KeyError) and len(err.args) == 1 and isinstance(err.args[0], str):
        message = err.args[0]  # str(KeyError) would quote it
    elif isinstance(err, (ValueError, OSError, KeyError)):
        message = str(err)
    else:
        strict = sys.modules.get("huggingface_hub.errors")  # loaded by whatever raised it
        if strict is None or not isinstance(err, strict.StrictDataclassError):
            return None
        message = str(err.__cause__ or err)
    return " ".join(message.split()) or type(err).__name__


def main(argv: list[str] | None = None) -> int:
    """Run one `vit-repro` command. Bad input prints `vit-repro CMD: error: MESSAGE` on one line
    and exits 2 (no traceback); Ctrl-C prints `vit-repro CMD: interrupted` and exits 130."""
    from .runs import library_progress_bars

    args = build_parser().parse_args(argv)
    try:
        with library_progress_bars(not getattr(args, "no_progress", False)):
            return args.func(args)
    except KeyboardInterrupt:
        print(f"\nvit-repro {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        message = user_error_message(err)
        if message is None:
            raise
        line = f"vit-repro {args.command}: error: {message}"
        print(line, file=sys.stderr)
        _tell_the_launcher(line)
        return 2


def _tell_the_launcher(line: str) -> None:
    """Under torchrun (and `accelerate launch` with several processes, which runs torchrun's agent),
    the launcher prints its own ChildFailedError report when a worker exits non-zero, and that report
    is what the user reads last. Its "Root Cause" shows the worker's error file
    (TORCHELASTIC_ERROR_FILE, torch.distributed.elastic's format) where one was written: write our one
    line there, so the report names the bad input instead of "error_file: <N/A>"."""
    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if not path or os.path.exists(path):  # another error was recorded first: keep it
        return
    record = {"message": {"message": line, "extraInfo": {"py_callstack": line, "timestamp": str(int(time.time()))}}}
    try:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(record, f)
    except OSError:
        pass  # the report then says <N/A>, as before; the line above was printed anyway


if __name__ == "__main__":
    sys.exit(main())
