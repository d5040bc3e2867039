"""Command side: fetch a dataset's source, decode and clean it, publish it as events."""
