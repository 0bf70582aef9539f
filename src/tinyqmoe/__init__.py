"""tinyqmoe: Llama-class language models on small, memory-starved CPUs.

    import tinyqmoe
    model = tinyqmoe.load("default")             # SmolLM2-135M-Instruct, int8 weights
    print(model.generate("The capital of France is", max_new_tokens=16))
"""
__version__ = "0.1.0"


def load(*args, **kwargs):
    """See tinyqmoe.api.load (imported lazily so `import tinyqmoe` stays light)."""
    from tinyqmoe.api import load as _load

    return _load(*args, **kwargs)


def __getattr__(name):
    if name == "Model":
        from tinyqmoe.api import Model

        return Model
    raise AttributeError(name)
