"""exporter: put a Hugging Face causal LM on a specific Android phone as an ExecuTorch .pte, and measure it."""

__version__ = "0.1.0"
