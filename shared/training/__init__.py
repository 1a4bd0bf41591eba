"""Training, evaluation and the paper's metrics for FashionNet."""
