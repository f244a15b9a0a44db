"""The networks ``usdcm train`` can build, none with pretrained weights (nothing is downloaded)."""
