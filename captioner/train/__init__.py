"""Training of ViT + GPT-2 captioners that write several languages, and the synthetic scenes they learn from."""
