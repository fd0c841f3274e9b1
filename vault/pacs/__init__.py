"""DICOM networking with a PACS or viewer (pynetdicom's only home): associations with TLS,
C-ECHO, C-STORE of files as they were backed up, C-FIND to ask what a PACS holds. No
repository here: jobs hand this wing files and endpoints and get back what the PACS said."""
