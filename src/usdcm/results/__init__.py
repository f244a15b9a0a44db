"""DICOM objects that carry usdcm's results back to the PACS: a TID 1500 Measurement Report
SR per study and the validation report as an Encapsulated PDF, written with highdicom.

These are the one output that carries the real patient module (copied from the source
headers, so that the PACS files them into the original study); nothing here logs it.
"""
