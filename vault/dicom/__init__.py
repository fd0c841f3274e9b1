"""Pure DICOM: header scan, study catalog, de-identification. May import only the base modules."""
