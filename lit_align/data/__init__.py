"""Data: preference rows, formats, collation and the embedded synthetic task."""
