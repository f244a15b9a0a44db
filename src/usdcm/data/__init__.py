"""From manifest rows to tensors: splits, intensity normalization, MONAI transforms, datasets."""
