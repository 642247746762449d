"""`tuneforge merge | adapters combine`: new model and adapter folders from trained adapters."""

from __future__ import annotations

from .output import console


def add_parsers(sub) -> None:
    mg = sub.add_parser("merge", help="fold an adapter into its base: a standalone model folder")
    mg.add_argument("target", metavar="RUN_OR_ADAPTER", help="a run folder (runs/NAME) or an adapter folder")
    mg.add_argument("--output", required=True, help="the new model folder (must not exist or be empty)")
    mg.add_argument(
        "--model", default=None, help="the base (default: the run's config.yaml model.name, else the adapter's record)"
    )
    mg.add_argument(
        "--dtype",
        default="auto",
        choices=["auto", "float32", "bfloat16", "float16"],
        help="dtype of the saved weights (default: the base's stored dtype)",
    )
    mg.add_argument("--trust-remote-code", action="store_true")
    mg.set_defaults(func=_cmd_merge)

    _adapters_parser(sub)


def _adapters_parser(sub) -> None:
    ad = sub.add_parser("adapters", help="adapter folders: combine several LoRA adapters into one")
    ad_sub = ad.add_subparsers(dest="adapters_command")
    ad.set_defaults(func=lambda _args: (ad.print_help(), 2)[1])
    co = ad_sub.add_parser("combine", help="a weighted combination of LoRA adapters (peft add_weighted_adapter)")
    co.add_argument("adapters", nargs="+", metavar="[NAME=]PATH", help="LoRA adapter or run folders")
    co.add_argument("--weights", nargs="+", type=float, required=True, help="one weight per adapter, in order")
    co.add_argument(
        "--method",
        required=True,
        metavar="METHOD",
        help="linear | cat | svd | ties | dare_linear | dare_ties | magnitude_prune",
    )
    co.add_argument(
        "--density",
        type=float,
        default=None,
        help="ties / dare_linear / dare_ties / magnitude_prune: share of entries kept, in (0, 1]",
    )
    co.add_argument("--output", required=True, help="the new adapter folder (must not exist or be empty)")
    co.add_argument("--name", default="combined", help="the combined adapter's name (not one of the inputs')")
    co.add_argument("--model", default=None, help="the base (default: the first adapter's)")
    co.add_argument("--trust-remote-code", action="store_true")
    co.set_defaults(func=_cmd_combine)


def _cmd_merge(args) -> int:
    from ..adapters.merge import merge_to_folder

    result = merge_to_folder(
        args.target, args.output, model_name=args.model, dtype=args.dtype, trust_remote_code=args.trust_remote_code
    )
    console.print(
        f"Merged the {result.adapter_type} adapter {result.adapter} into {result.base}: "
        f"{result.output} (a plain transformers model folder)",
        highlight=False,
    )
    return 0


def _cmd_combine(args) -> int:
    from ..adapters.combine import combine_adapters

    result = combine_adapters(
        args.adapters,
        args.weights,
        method=args.method,
        output=args.output,
        density=args.density,
        name=args.name,
        model_name=args.model,
        trust_remote_code=args.trust_remote_code,
    )
    console.print(
        f"Combined {len(args.adapters)} adapters ({result.method}, rank {result.rank}): {result.output}",
        highlight=False,
    )
    return 0
