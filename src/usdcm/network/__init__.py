"""usdcm as a DICOM node: receive (C-STORE SCP), pull (QIDO/WADO-RS) and send (C-STORE SCU,
STOW-RS), over pynetdicom and dicomweb-client.

Sits above inference and ingest (``listen --predict`` ingests and classifies a study once it
is complete) and below the CLI. Never writes a patient identifier or a UID to a log.
"""
