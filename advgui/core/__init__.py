"""Qt-free engine: models, image sets, attacks, metrics, export."""
