"""An opened repository: keys, locks, writer, index, audit log. Imports dicom, format and below."""
