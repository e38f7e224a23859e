"""Package data: demo weights, demo images, digits data, icons."""
