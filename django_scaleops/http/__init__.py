"""Compression, conditional GET and Cache-Control middleware that middleware order cannot break."""
