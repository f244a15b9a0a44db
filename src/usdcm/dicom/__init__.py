"""Read one DICOM SOP instance: its header, its ultrasound regions, its pixels.

Knows nothing of exports, manifests or training.
"""
