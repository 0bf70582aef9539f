"""The Llama model: configuration, loaders, tokenizer and the forward pass."""
