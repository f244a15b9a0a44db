"""Clinical validation: predictions of a trained run, and the report recomputed from them."""
