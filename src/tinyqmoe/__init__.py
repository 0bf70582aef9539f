"""tinyqmoe: Llama-class language models on small, memory-starved CPUs.

    import tinyqmoe
    with tinyqmoe.load("default") as model:      # SmolLM2-135M-Instruct, int8 weights
        print(model.generate("The capital of France is", max_new_tokens=16))

`tinyqmoe.load` and `tinyqmoe.Model` are imported on first use, so `import tinyqmoe` stays light.
"""
__version__ = "0.1.0"


def __getattr__(name):
    if name in ("load", "Model"):
        from tinyqmoe import api

        return getattr(api, name)
    raise AttributeError(f"module 'tinyqmoe' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + ["load", "Model"])
