"""Studies from a DICOM server (DICOMweb or DIMSE) in, and derived series stored back.

``settings`` holds the config sections (torch-free); ``server`` opens a connection of either
protocol behind one small interface; ``cache`` keeps retrieved studies on disk; ``cases`` turns a
query or a case list's Study Instance UIDs into cases; ``store`` sends a case's Parametric Map and
Secondary Capture series back into the source study, idempotently.
"""
