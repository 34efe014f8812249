"""Building a .pte: model source, export plan, static-cache decoder, quantization recipes, lowering, pipeline."""
