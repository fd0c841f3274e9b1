"""What a backup reads (file trees; dumps, PACS later). May import dicom, format, policy, below."""
