"""Fine-tune a ViT with `transformers.Trainer` instead of this package's Accelerate loop.

    python examples/trainer_finetune.py --checkpoint outputs/demo/vit_pretrain --task digits \
        --image-size 32 --output-dir outputs/trainer_digits

For users who prefer Trainer: our model, a `datasets` image dataset (`hf_vit_repro.data.load_task`:
a registry task, a Hub dataset id or a local folder) with `set_transform`, and accuracy from an
`evaluate` module (`hf_vit_repro.metrics`, loaded by path, so offline). The paper's fine-tuning
protocol (Sec. 3.2, Appendix B.1.1) maps onto Trainer like this:

- head: `model.reset_classifier(K)` drops the pre-logits layer and attaches a zero-initialised
  K-way head; `model.resize_position_embeddings(size)` resamples the position embeddings once
  for the higher resolution;
- SGD with momentum 0.9, no weight decay, cosine decay after a linear warm-up, gradient
  clipping at global norm 1: passed to Trainer as `optimizers=(optimizer, scheduler)` and
  `max_grad_norm=1.0`;
- batch 512 = per-device batch x devices x `gradient_accumulation_steps` (our model sets
  `accepts_loss_kwargs = False`, so Trainer does not rescale its per-batch mean loss);
- `remove_unused_columns=False`, or Trainer drops the "image" column before the transform sees it.

`vit-repro train recipes/finetune_*.yaml` runs the same protocol with checkpoints, resume and the
learning-rate sweep; this script is the short Trainer version of one run.
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import torch


def build_model(checkpoint: str | None, num_labels: int, image_size: int, id2label: dict[int, str]):
    """A checkpoint (run folder, save_pretrained folder or Hub id) with a fresh zero-initialised
    head at `image_size`, or, without one, a small ViT from scratch (for a quick look)."""
    from hf_vit_repro import ViTReproConfig, ViTReproForImageClassification
    from hf_vit_repro.training import resolve_checkpoint

    if checkpoint is None:
        config = ViTReproConfig(image_size=image_size, patch_size=4, hidden_size=64, num_hidden_layers=4,
                                num_attention_heads=4, intermediate_size=128, num_labels=num_labels,
                                id2label=id2label, label2id={v: k for k, v in id2label.items()})
        return ViTReproForImageClassification(config)
    model = ViTReproForImageClassification.from_pretrained(resolve_checkpoint(checkpoint))
    model.reset_classifier(num_labels, id2label=id2label)  # paper Sec. 3.2: drop pre-logits, zero head
    if model.config.image_size != image_size:
        model.resize_position_embeddings(image_size)  # resampled once, then trained at that size
    return model


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default=None, help="run folder, save_pretrained folder or Hub id (default: from scratch)")
    parser.add_argument("--task", default="digits", help="registry task, Hub dataset id or local folder (default digits)")
    parser.add_argument("--data-dir", default=None, help="local copy of the task's dataset")
    parser.add_argument("--train-split", default="train")
    parser.add_argument("--eval-split", default="test")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--output-dir", default="outputs/trainer_finetune")
    parser.add_argument("--max-steps", type=int, default=200)
    parser.add_argument("--learning-rate", type=float, default=0.03)
    parser.add_argument("--warmup-steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=64, help="per-device batch")
    parser.add_argument("--gradient-accumulation-steps", type=int, default=1)
    parser.add_argument("--max-train-examples", type=int, default=None)
    parser.add_argument("--max-eval-examples", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from transformers import Trainer, TrainingArguments, ViTImageProcessor, get_cosine_schedule_with_warmup

    from hf_vit_repro.data import class_names, eval_transform, finetune_transform, load_task
    from hf_vit_repro.metrics import load_metric

    # ---- data: a datasets image dataset, transformed on the fly
    train = load_task(args.task, args.train_split, args.data_dir)
    test = load_task(args.task, args.eval_split, args.data_dir)
    if args.max_train_examples:
        train = train.select(range(min(args.max_train_examples, len(train))))
    if args.max_eval_examples:
        test = test.select(range(min(args.max_eval_examples, len(test))))
    names = class_names(train)
    train_tf = finetune_transform(args.image_size, flip=False)  # digits: a mirrored digit is another symbol
    test_tf = eval_transform(args.image_size)

    def with_pixels(transform):
        def apply(batch):
            return {"pixel_values": [transform(image) for image in batch["image"]], "labels": batch["label"]}
        return apply

    train.set_transform(with_pixels(train_tf))
    test.set_transform(with_pixels(test_tf))

    def collate(rows):
        return {"pixel_values": torch.stack([r["pixel_values"] for r in rows]),
                "labels": torch.tensor([r["labels"] for r in rows])}

    # ---- model, optimizer, schedule: the paper's fine-tuning
    torch.manual_seed(args.seed)
    model = build_model(args.checkpoint, len(names), args.image_size, dict(enumerate(names)))
    optimizer = torch.optim.SGD(model.parameters(), lr=args.learning_rate, momentum=0.9, weight_decay=0.0)
    scheduler = get_cosine_schedule_with_warmup(optimizer, args.warmup_steps, args.max_steps)

    accuracy = load_metric("top_k_accuracy")

    def compute_metrics(prediction):
        logits, labels = prediction
        k = [1, 5] if logits.shape[-1] > 5 else [1]
        return accuracy.compute(predictions=np.asarray(logits), references=np.asarray(labels), k=k)

    training_args = TrainingArguments(
        output_dir=args.output_dir,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=256,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        max_steps=args.max_steps,
        max_grad_norm=1.0,
        logging_steps=max(1, args.max_steps // 10),
        eval_strategy="no",
        save_strategy="no",
        report_to=[],
        remove_unused_columns=False,
        dataloader_num_workers=0,
        dataloader_pin_memory=torch.cuda.is_available(),
        seed=args.seed,
    )
    trainer = Trainer(model=model, args=training_args, train_dataset=train, eval_dataset=test,
                      data_collator=collate, compute_metrics=compute_metrics, optimizers=(optimizer, scheduler))
    trainer.train()
    metrics = trainer.evaluate()
    trainer.save_model(args.output_dir)  # save_pretrained: remote-code ready
    ViTImageProcessor(size={"height": args.image_size, "width": args.image_size},
                      image_mean=list(train_tf.mean), image_std=list(train_tf.std)).save_pretrained(args.output_dir)
    print({k: (round(v, 4) if isinstance(v, float) and math.isfinite(v) else v) for k, v in metrics.items()})
    return metrics


if __name__ == "__main__":
    main()
