"""``flmr train``: the command-line front of [`finetune`]."""

import argparse
import sys

from flmr.data.m2kr import M2KR_HUB_NAME
from flmr.training.config import INSTRUCTION_MODES, LOGGERS, FinetuneConfig
from flmr.training.data import TrainingData, load_training_data

from .exit_codes import EXIT_FAILURE, EXIT_OK, EXIT_USAGE

EXAMPLES = f"""\
examples:
  # the original's E-VQA recipe (README): PreFLMR ViT-G, frozen ViT, bf16, 2 GPUs
  flmr train --checkpoint LinWeizheDragon/PreFLMR_ViT-G --dataset {M2KR_HUB_NAME} --task EVQA \\
      --image-root /data/EVQA/images --image-processor laion/CLIP-ViT-bigG-14-laion2B-39B-b160k \\
      --freeze-vision-encoder --batch-size 8 --accumulate-grad-batches 8 --learning-rate 5e-6 \\
      --warmup-steps 100 --precision bf16-mixed --strategy ddp_find_unused_parameters_true \\
      --val-check-interval 2000 --logger wandb --output-dir saved_models

  # a JSONL of {{"query", "instruction"?, "image_path"?, "positives": [...], "negatives": [...]}}
  flmr train --checkpoint my_checkpoint --train-file train.jsonl --valid-file valid.jsonl \\
      --image-root images --max-steps 2000 --output-dir finetuned

Checkpoints are written to <output-dir>/model_step_<N> after every validation and at the end; load
them with FLMRModelForRetrieval.from_pretrained or evaluate them with `flmr evaluate`.
"""


def add_train_command(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``train`` to the ``flmr`` command's subparsers; its handler is ``args.handler``.

    Example:
        >>> parser = argparse.ArgumentParser(prog="flmr")
        >>> add_train_command(parser.add_subparsers(dest="command"))  # doctest: +ELLIPSIS
        ArgumentParser(...)
    """
    parser = subparsers.add_parser(
        "train",
        help="finetune a checkpoint contrastively (in-batch negatives)",
        description=(
            "Finetune an FLMR / PreFLMR checkpoint on queries with positive and negative passages: one "
            "positive and --num-negative-examples negatives per query, every other document of the batch "
            "as further negatives, AdamW with linear warm-up and decay. Runs on PyTorch Lightning."
        ),
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    data = parser.add_argument_group("data")
    data.add_argument("--checkpoint", required=True, help="checkpoint folder or hub name to start from")
    data.add_argument("--dataset", help=f"M2KR source: a local folder or a hub name (e.g. {M2KR_HUB_NAME})")
    data.add_argument("--task", help="M2KR task to train on, e.g. EVQA (with --dataset)")
    data.add_argument("--train-split", default="train", help="M2KR training split (default: %(default)s)")
    data.add_argument(
        "--valid-split", default="valid", help="M2KR validation split; 'none' to skip (default: %(default)s)"
    )
    data.add_argument("--train-file", help="JSONL training file (instead of --dataset)")
    data.add_argument("--valid-file", help="JSONL validation file")
    data.add_argument("--image-root", help="folder image paths are relative to")
    data.add_argument("--image-processor", help="image processor name or folder (default: the config's)")
    data.add_argument("--revision", help="dataset revision to pin on the hub")
    data.add_argument("--output-dir", required=True, help="checkpoints and logs")

    recipe = parser.add_argument_group("recipe")
    recipe.add_argument("--batch-size", type=int, default=8, help="queries per batch (default: 8)")
    recipe.add_argument(
        "--accumulate-grad-batches", type=int, default=8, help="batches per step (default: 8)"
    )
    recipe.add_argument("--learning-rate", type=float, default=5e-6, help="AdamW rate (default: 5e-6)")
    recipe.add_argument("--weight-decay", type=float, default=0.01, help="AdamW weight decay (default: 0.01)")
    recipe.add_argument("--warmup-steps", type=int, default=100, help="linear warm-up steps (default: 100)")
    recipe.add_argument(
        "--max-steps", type=int, default=-1, help="optimizer steps (default: until --max-epochs)"
    )
    recipe.add_argument("--max-epochs", type=int, help="epochs (default: Lightning's when --max-steps is -1)")
    recipe.add_argument(
        "--num-negative-examples", type=int, default=4, help="negatives per query (default: 4)"
    )
    recipe.add_argument(
        "--instruction-mode",
        choices=("auto", *INSTRUCTION_MODES),
        default="auto",
        help="sampled: one of the original's 8 instructions per query; dataset: each row's own; "
        "auto: sampled for PreFLMR checkpoints, else dataset",
    )
    recipe.add_argument("--freeze-vision-encoder", action="store_true", help="keep the vision encoders fixed")
    recipe.add_argument(
        "--in-batch-negatives-from-all-gpus",
        action="store_true",
        help="gather in-batch negatives across GPUs",
    )
    recipe.add_argument("--doc-maxlen", type=int, default=512, help="passage token limit (default: 512)")
    recipe.add_argument("--seed", type=int, default=42)

    validation = parser.add_argument_group("validation")
    validation.add_argument(
        "--val-check-interval", type=_interval, default=2000, help="training batches (int) or epoch fraction"
    )
    validation.add_argument("--val-batch-size", type=int, default=16)
    validation.add_argument(
        "--val-ks", type=int, nargs="+", default=[1, 5, 10], help="K of validation Recall@K"
    )
    validation.add_argument("--val-max-queries", type=int, help="validation queries used for Recall@K")
    validation.add_argument("--num-sanity-val-steps", type=int, default=2)

    hardware = parser.add_argument_group("hardware and logging")
    hardware.add_argument("--precision", default="32-true", help="32-true, bf16-mixed, 16-mixed, bf16-true")
    hardware.add_argument("--accelerator", default="auto", help="cpu, gpu, auto")
    hardware.add_argument("--devices", default="auto", help="number of devices or 'auto'")
    hardware.add_argument("--strategy", default="auto", help="e.g. ddp_find_unused_parameters_true")
    hardware.add_argument("--num-nodes", type=int, default=1)
    hardware.add_argument("--num-workers", type=int, default=0, help="dataloader workers")
    hardware.add_argument("--logger", choices=LOGGERS, default="csv", help="csv, tensorboard, wandb, none")
    hardware.add_argument("--wandb-project", default="flmr-finetune")
    hardware.add_argument("--log-every-n-steps", type=int, default=50)
    parser.set_defaults(handler=run_train_command)
    return parser


def _interval(value: str) -> int | float:
    return float(value) if "." in value else int(value)


def run_train_command(args: argparse.Namespace) -> int:
    """Run ``flmr train``; returns the exit code (0 ok, 1 runtime error, 2 usage error)."""
    usage_error = _usage_error(args)
    if usage_error:
        print(f"flmr train: error: {usage_error}", file=sys.stderr)
        return EXIT_USAGE
    from flmr.training import finetune  # PyTorch Lightning loads in seconds: only when training

    try:
        config = _config(args)
        train_data, valid_data = _data(args)
        result = finetune(
            args.checkpoint,
            train_data,
            args.output_dir,
            config,
            validation_data=valid_data,
            image_processor=args.image_processor,
        )
    except (OSError, ValueError, RuntimeError) as error:
        print(f"flmr train: error: {error}", file=sys.stderr)
        return EXIT_FAILURE
    print(f"trained {result.global_step} steps, {result.examples_per_second:.2f} examples/second")
    for name, value in sorted(result.metrics.items()):
        print(f"  {name}: {value:.4f}")
    print(f"last checkpoint: {result.checkpoints[-1]}")
    return EXIT_OK


def _usage_error(args: argparse.Namespace) -> str | None:
    if bool(args.train_file) == bool(args.dataset):
        return "give either --train-file or --dataset with --task"
    if args.dataset and not args.task:
        return "--dataset needs --task"
    if args.valid_file and args.dataset:
        return "--valid-file goes with --train-file; with --dataset use --valid-split"
    return None


def _config(args: argparse.Namespace) -> FinetuneConfig:
    return FinetuneConfig(
        batch_size=args.batch_size,
        accumulate_grad_batches=args.accumulate_grad_batches,
        learning_rate=args.learning_rate,
        weight_decay=args.weight_decay,
        warmup_steps=args.warmup_steps,
        max_steps=args.max_steps,
        max_epochs=args.max_epochs,
        num_negative_examples=args.num_negative_examples,
        instruction_mode=args.instruction_mode,
        freeze_vision_encoder=args.freeze_vision_encoder,
        in_batch_negatives_from_all_gpus=args.in_batch_negatives_from_all_gpus,
        precision=args.precision,
        doc_maxlen=args.doc_maxlen,
        val_check_interval=args.val_check_interval,
        val_batch_size=args.val_batch_size,
        val_ks=args.val_ks,
        val_max_queries=args.val_max_queries,
        num_sanity_val_steps=args.num_sanity_val_steps,
        accelerator=args.accelerator,
        devices=int(args.devices) if args.devices.isdigit() else args.devices,
        strategy=args.strategy,
        num_nodes=args.num_nodes,
        logger=args.logger,
        wandb_project=args.wandb_project,
        log_every_n_steps=args.log_every_n_steps,
        num_workers=args.num_workers,
        seed=args.seed,
    )


def _data(args: argparse.Namespace) -> tuple[TrainingData, TrainingData | None]:
    if args.train_file:
        train = load_training_data(args.train_file, image_root=args.image_root)
        valid = load_training_data(args.valid_file, image_root=args.image_root) if args.valid_file else None
        return train, valid
    train = load_training_data(args.dataset, args.task, args.train_split, args.image_root, args.revision)
    valid = None
    if args.valid_split != "none":
        valid = load_training_data(args.dataset, args.task, args.valid_split, args.image_root, args.revision)
    return train, valid
