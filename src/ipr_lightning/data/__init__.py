"""Data records, file I/O with validation, chat rendering and collators."""
