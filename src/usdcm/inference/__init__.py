"""From a trained run to probabilities: the checkpoint's model and preprocessing, applied."""
