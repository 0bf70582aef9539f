"""Read files others wrote: HF safetensors directories, GGUF files, their configs and tokenizers."""
