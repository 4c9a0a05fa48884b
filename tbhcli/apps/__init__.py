"""What users run on top of the stages: query, gallery, duplicates, info, demo."""
