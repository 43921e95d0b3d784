"""Readers (path -> Volume, lenient about headers, strict about geometry) and case discovery."""
