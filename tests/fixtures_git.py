"""Placeholder: the git server fixture lands with the sources module."""
