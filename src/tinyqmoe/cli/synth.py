"""tinyqmoe synth: write a random Llama with real shapes (1B, 3B) as a Hugging Face directory."""
from tinyqmoe.cli.common import add_progress_option


def register(sub) -> None:
    p = sub.add_parser("synth", help="write a random Llama of a real shape (HF safetensors directory)",
                       description="Random weights with the shapes of Llama 3.2 1B/3B (or a tiny test shape), "
                                   "written tensor by tensor with bounded memory. Random weights compress "
                                   "differently from trained ones: use them for memory and speed, not ratios.")
    p.add_argument("--shape", required=True, choices=("tiny", "llama-3.2-1b", "llama-3.2-3b"))
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="directory to create (must not exist "
                                                                        "or be empty)")
    p.add_argument("-s", "--seed", type=int, default=0, help="weights are a function of the seed (default 0)")
    p.add_argument("--dtype", choices=("bf16", "f32"), default="bf16", help="stored weight type (default bf16)")
    p.add_argument("--shard-size", default="2GB", metavar="SIZE",
                   help="largest safetensors shard (default 2GB = 2*10^9 bytes; GiB for binary)")
    add_progress_option(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from tinyqmoe.cli.common import show_progress
    from tinyqmoe.synth import write_synthetic_model
    from tinyqmoe.units import parse_size

    out = write_synthetic_model(args.shape, args.output, seed=args.seed, dtype=args.dtype,
                                shard_bytes=parse_size(args.shard_size, "--shard-size"), progress=show_progress(args))
    print(out)
    return 0
