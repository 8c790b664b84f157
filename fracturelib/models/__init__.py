"""Everything that is a model: builders, backbones and their weights, training, the localiser,
the radiograph (OOD) detector, model cards."""
