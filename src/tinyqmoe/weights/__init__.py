"""Weight sources: where the forward pass gets each layer (resident, streamed, fused), and the memory budget."""
