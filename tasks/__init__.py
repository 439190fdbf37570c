"""Per-file DICOM de-identification work (PS3.15 Annex E): pure functions, no pipeline imports."""
