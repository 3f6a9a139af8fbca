"""The bundled CPU testbed: task family, tokenizer, training corpus and training script."""
