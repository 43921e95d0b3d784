"""Writers: strict, one module per output format; they take Volumes, never bare arrays."""
