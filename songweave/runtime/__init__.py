"""Process-level machinery: flags and exit codes, devices and DDP, precision, resources,
locks and checkpoints."""
