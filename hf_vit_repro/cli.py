"""`vit-repro`: the command-line door into the package. Each subcommand is a thin wrapper
around a library function; `vit-repro SUBCOMMAND --help` documents it."""

from __future__ import annotations

import argparse
import sys


def _cmd_variants(args: argparse.Namespace) -> int:
    import torch

    from .configuration_vit_repro import ViTReproConfig
    from .modeling_vit_repro import ViTReproModel
    from .variants import PATCH_SIZES, SIZES

    patches = [args.patch] if args.patch else PATCH_SIZES
    print(f"{'variant':<10} {'layers':>6} {'hidden':>6} {'mlp':>6} {'heads':>5} {'params (no head)':>17}")
    for size, (hidden, layers, heads, mlp) in SIZES.items():
        for patch in patches:
            name = f"ViT-{size}/{patch}"
            with torch.device("meta"):  # count parameters without allocating them
                model = ViTReproModel(ViTReproConfig.from_variant(name, image_size=args.image_size))
            count = sum(p.numel() for p in model.parameters())
            print(f"{name:<10} {layers:>6} {hidden:>6} {mlp:>6} {heads:>5} {count / 1e6:>16.1f}M")
    return 0


def _cmd_convert(args: argparse.Namespace) -> int:
    from .convert import convert

    out = convert(
        args.source,
        args.output_dir,
        image_size=args.image_size,
        num_labels=args.num_labels,
        allow_pickle=args.allow_pickle,
        architecture=args.timm_architecture,
    )
    print(f"Wrote {out} (load it with {_auto_class_of(out)}.from_pretrained({str(out)!r}))")
    return 0


def _auto_class_of(folder) -> str:
    """The Auto class that loads the model class a checkpoint folder was saved from."""
    import json
    from pathlib import Path

    from .modeling_vit_repro import AUTO_MAP

    architectures = json.loads((Path(folder) / "config.json").read_text()).get("architectures") or []
    for auto_class, target in AUTO_MAP.items():
        if target.rsplit(".", 1)[-1] in architectures:
            return auto_class
    return "AutoModel"


# Modules that add their own subcommands: each defines `add_cli(subparsers)`, which adds a parser
# whose `func(args) -> int` default runs the command. Such modules keep their heavy imports
# (matplotlib, datasets, ...) inside functions so `vit-repro --help` stays fast.
SUBCOMMAND_MODULES: list[str] = ["analysis", "data", "evaluation", "evaluation.vtab", "training", "demo", "hub", "studies"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vit-repro",
        description="The Vision Transformer (Dosovitskiy et al., 2021) for the Hugging Face ecosystem.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("variants", help="print the table of named ViT variants with parameter counts")
    p.add_argument("--image-size", type=int, default=224, help="resolution the counts are for (default 224)")
    p.add_argument("--patch", type=int, default=None, help="only this patch size")
    p.set_defaults(func=_cmd_variants)

    p = sub.add_parser(
        "convert",
        help="convert a published ViT checkpoint to this package's format",
        description="Convert a published ViT checkpoint into a folder that AutoModelForImageClassification."
        "from_pretrained loads, with or without this package installed, with a ViTImageProcessor config matching "
        "the source's preprocessing (a transformers ViTForMaskedImageModeling becomes this package's "
        "masked-image-modeling class, for AutoModelForMaskedImageModeling). Sources: a transformers ViT (folder or "
        "Hub repo id), a timm hub repo (folder or repo id with config.json + model.safetensors; plain ViTs and the BiT hybrids), an original JAX .npz "
        "(google-research/vision_transformer, AugReg or big_vision layout; the architecture is read off the "
        "arrays), or a bare timm weights file with --timm-architecture.",
    )
    p.add_argument(
        "source",
        help="folder, Hub repo id (google/vit-base-patch16-224, timm/vit_base_patch16_224.augreg2_in21k_ft_in1k), "
        ".npz file (ViT-B_16.npz, R50+ViT-B_16.npz) or weights file",
    )
    p.add_argument("output_dir", help="folder to write (config, safetensors weights, code, image processor)")
    p.add_argument(
        "--image-size", type=int, default=None,
        help="resample position embeddings to this resolution (e.g. 384 for a checkpoint trained at 224)",
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
    p.set_defaults(func=_cmd_convert)

    import importlib

    for module_name in SUBCOMMAND_MODULES:
        importlib.import_module(f"hf_vit_repro.{module_name}").add_cli(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, OSError, KeyError) as err:
        # Errors the library raises for bad input carry a message meant for the user.
        print(f"vit-repro {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
