"""Training: configuration, the run's setup, losses, optimizer, adversary, logs and TensorBoard."""
