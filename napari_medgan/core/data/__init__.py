"""Volumes with their geometry: file IO, checks, intensity normalisation, patch sampling."""
