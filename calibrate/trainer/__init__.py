"""The bundled trainer behind `vramplan run`: JSONL data, a plain training loop, checkpoints."""
