"""Models: loading, preprocessing, generation and scoring. No Ray."""
